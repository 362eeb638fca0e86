"""A Python viewer: connects through ``/offer``, sends poses, and pairs each decoded frame with the
pose it shows (through the frame messages' ``pts``). Tests and latency benchmarks drive the
server with it exactly as a browser would."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ..kernels.cameras import intrinsics_from_fov, opencv_to_opengl, orbit_camera, projection_from_intrinsics


def pose_message(seq: int, azimuth_deg: float, width: int, height: int, radius: float, centre, fov_deg: float = 40.0, views: int = 1) -> str:
    """A v1 pose of an orbit camera, as the web client would send it (column-major GL matrices)."""
    intrinsics = intrinsics_from_fov(fov_deg, width, height)
    projection = projection_from_intrinsics(intrinsics, width, height)
    eyes = [-3.0, 3.0] if views == 2 else [0.0]
    payload = []
    for offset in eyes:
        camera_to_world = opencv_to_opengl(orbit_camera(azimuth_deg + offset, 5.0, radius, tuple(centre)))
        payload.append({"matrix": camera_to_world.T.flatten().tolist(), "projection": projection.T.flatten().tolist()})
    return json.dumps({"v": 1, "type": "pose", "seq": seq, "t": time.monotonic() * 1e3, "width": width, "height": height, "views": payload})


class Viewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("pose", ordered=False, maxRetransmits=0)
        self.pc.addTransceiver("video", direction="recvonly")
        self.messages: list[dict] = []
        self.track = None
        self.session_id = None
        self._track_ready = asyncio.Event()
        self._channel_open = asyncio.Event()
        self.channel.on("open", self._channel_open.set)
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))

        @self.pc.on("track")
        def on_track(track) -> None:
            self.track = track
            self._track_ready.set()

    async def connect(self, base_url: str, avatar: str | None = None) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if avatar is not None:
            body["avatar"] = avatar
        async with aiohttp.ClientSession() as http, http.post(f"{base_url}/offer", json=body) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {answer}")
        self.session_id = answer["session"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.wait_for(self._track_ready.wait(), 20)
        await asyncio.wait_for(self._channel_open.wait(), 20)

    async def frame_for(self, seq: int, timeout: float = 30.0) -> tuple[av.VideoFrame, dict]:
        """The first decoded frame that shows pose ``seq``, with its frame message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = await asyncio.wait_for(self.track.recv(), timeout)
            for message in self.messages:
                if message["seq"] == seq and message["pts"] == frame.pts:
                    return frame, message
        raise TimeoutError(f"no decoded frame showed pose {seq}")

    async def close(self) -> None:
        await self.pc.close()
