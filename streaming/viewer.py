"""A Python viewer: connects through ``/offer``, sends poses, and pairs each decoded frame with the
pose it shows (through the frame messages' ``pts``). Tests and latency benchmarks drive the
server with it exactly as a browser would; like a browser, it decodes each frame as soon as its
last packet is in (``jitterbuffer``), unless told to wait as aiortc's receiver does."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import aiohttp
import aiortc.rtcrtpreceiver
import av
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_TIME_BASE

from .ice import viewer_ice_servers
from .jitterbuffer import release_frames_on_marker

# Poses are built in plain Python, as a browser builds them: a viewer is a client, and importing
# torch (engine.cameras) took ~3 s of CPU a process, which 32 viewers starting on 4 CPUs could
# not spare. tests/test_viewer_poses.py checks them against engine.cameras.


@functools.lru_cache(maxsize=8)
def _projection(fov_deg: float, width: int, height: int, near: float = 0.01, far: float = 100.0) -> list[float]:
    """Column-major GL projection of a centred pinhole view (``projection_from_intrinsics`` of
    ``intrinsics_from_fov``): the same for every pose of a viewer."""
    focal = height / (2 * math.tan(math.radians(fov_deg) / 2))
    depth_scale, depth_offset = -(far + near) / (far - near), -2 * far * near / (far - near)
    return [2 * focal / width, 0.0, 0.0, 0.0, 0.0, 2 * focal / height, 0.0, 0.0, 0.0, 0.0, depth_scale, -1.0, 0.0, 0.0, depth_offset, 0.0]


@functools.lru_cache(maxsize=8192)
def _orbit_matrix(azimuth_deg: float, radius: float, centre: tuple[float, float, float], elevation_deg: float = 5.0) -> list[float]:
    """Column-major GL camera-to-world of an orbit pose looking at ``centre`` with +y up
    (``opencv_to_opengl(orbit_camera(...))``). An orbit's poses repeat every turn (4 x the pose
    rate of them at 90 degrees a second: 240 at 60 Hz, 8000 for a 2 kHz flood), so a
    load-generating viewer computes each once."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    back = (math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el))  # unit, centre -> eye
    eye = [c + radius * b for c, b in zip(centre, back)]
    # right = unit(forward x up) with forward = -back and up = +y; GL's up = -(forward x right).
    right_len = math.hypot(back[0], back[2])
    right = (back[2] / right_len, 0.0, -back[0] / right_len)
    up = (back[1] * right[2] - back[2] * right[1], back[2] * right[0] - back[0] * right[2], back[0] * right[1] - back[1] * right[0])
    return [*right, 0.0, *up, 0.0, *back, 0.0, *eye, 1.0]


def pose_message(seq: int, azimuth_deg: float, width: int, height: int, radius: float, centre, fov_deg: float = 40.0, views: int = 1) -> str:
    """A v1 pose of an orbit camera, as the web client would send it (column-major GL matrices)."""
    projection = _projection(fov_deg, width, height)
    eyes = [-3.0, 3.0] if views == 2 else [0.0]
    payload = [
        {"matrix": _orbit_matrix((azimuth_deg + offset) % 360.0, radius, tuple(centre)), "projection": projection} for offset in eyes
    ]
    return json.dumps({"v": 1, "type": "pose", "seq": seq, "t": time.monotonic() * 1e3, "width": width, "height": height, "views": payload})


class ArrivalDecoder(Decoder):
    """Stands in for aiortc's decoder in a viewer that generates load: each reassembled frame
    comes out as a 2x2 placeholder with its RTP timestamp, so that frames are counted and paired
    with their poses without the CPU that decoding them takes from the server's host."""

    def decode(self, encoded_frame: JitterFrame) -> list[av.VideoFrame]:
        frame = av.VideoFrame(2, 2, "yuv420p")
        frame.pts, frame.time_base = encoded_frame.timestamp, VIDEO_TIME_BASE
        return [frame]


def skip_decoding() -> None:
    """For the whole process: aiortc's receivers (which ask ``rtcrtpreceiver.get_decoder`` for each
    codec they meet) get an ``ArrivalDecoder``; aiortc has no option of its own for this."""
    aiortc.rtcrtpreceiver.get_decoder = lambda codec: ArrivalDecoder()


MESSAGE_MEMORY = 1024
"""Frame messages kept for pairing: several seconds of video at 60 fps."""


@dataclass
class ViewerReport:
    """What a viewer measured: decoded frames and pose-sent -> frame-decoded latency (ms); under
    ``skip_decoding``, frames and latency as they leave aiortc's receiver, undecoded."""

    seconds: float
    frames_decoded: int
    frames_matched: int
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    frame_size: tuple[int, int] | None = None
    """The last frame's width and height: (2, 2) where ``skip_decoding`` is in force."""

    @property
    def fps(self) -> float:
        return self.frames_decoded / self.seconds

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None

        return {"seconds": round(self.seconds, 2), "frames_decoded": self.frames_decoded, "fps": round(self.fps, 2),
                "frames_matched": self.frames_matched, "latency_ms_p50": pct(0.5), "latency_ms_p95": pct(0.95), "latency_ms_p99": pct(0.99),
                "frame_size": self.frame_size}


class Viewer:
    def __init__(self, video_codecs: tuple[str, ...] | None = None, aiortc_release: bool = False, ice_servers: list[RTCIceServer] | None = None) -> None:
        """``video_codecs``: offer only these mime types (e.g. ("video/VP8",)); default: all.
        ``aiortc_release``: release frames as aiortc's receiver does, when the next frame's first
        packet arrives (one frame interval later), instead of at their own last packet.
        ``ice_servers``: STUN/TURN for this peer (``ice.viewer_ice_servers`` of the server's
        ``POST /ice``); none: host candidates only."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers or []))
        self.channel = self.pc.createDataChannel("pose", ordered=False, maxRetransmits=0)
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        if not aiortc_release:
            release_frames_on_marker(transceiver.receiver)
        if video_codecs is not None:
            wanted = {c.lower() for c in video_codecs}
            capabilities = RTCRtpReceiver.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in capabilities if c.mimeType.lower() in wanted])
        self.frame_messages: OrderedDict[int, dict] = OrderedDict()
        self.track = None
        self.session_id = None
        self._seq = 0  # pose sequence numbers rise across orbits: the server keeps only newer poses
        self._track_ready = asyncio.Event()
        self._channel_open = asyncio.Event()
        self.channel.on("open", self._channel_open.set)
        self.channel.on("message", self._on_message)

        @self.pc.on("track")
        def on_track(track) -> None:
            self.track = track
            self._track_ready.set()

    def _on_message(self, message: str) -> None:
        info = json.loads(message)
        self.frame_messages[info["pts"]] = info
        while len(self.frame_messages) > MESSAGE_MEMORY:
            self.frame_messages.popitem(last=False)

    async def connect(self, base_url: str, avatar: str | None = None, token: str | None = None) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if avatar is not None:
            body["avatar"] = avatar
        if token is not None:
            body["token"] = token
        async with aiohttp.ClientSession() as http:
            answer = await _answer(http.post(f"{base_url}/offer", json=body))
        self.session_id = answer["session"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.wait_for(self._track_ready.wait(), 20)
        await asyncio.wait_for(self._channel_open.wait(), 20)

    async def frame_for(self, seq: int, timeout: float = 30.0) -> tuple[av.VideoFrame, dict]:
        """The first decoded frame that shows pose ``seq``, with its frame message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = await asyncio.wait_for(self.track.recv(), timeout)
            info = self.frame_messages.get(frame.pts)
            if info is not None and info["seq"] == seq:
                return frame, info
        raise TimeoutError(f"no decoded frame showed pose {seq}")

    async def orbit(self, scene: dict, seconds: float, width: int, height: int, views: int = 1, pose_hz: float = 60.0) -> ViewerReport:
        """Turn around the avatar for ``seconds``, sending a new pose at ``pose_hz``, and measure
        each decoded frame's latency from the sending of the pose it shows. Frames of poses sent
        before this call (still queued in the receiver) count as decoded, not in the latencies."""
        latencies: list[float] = []
        decoded = matched = 0
        size = None
        reported: set[int] = set()
        first_seq = self._seq + 1

        async def send_poses() -> None:
            # Poses go out in ticks of at least 10 ms, so rates past what asyncio can time work;
            # ticks keep to a fixed schedule, as a display's frames do, rather than drifting by
            # each sleep's overshoot.
            tick = max(1.0 / pose_hz, 0.01)
            deadline = time.monotonic()
            while True:
                for _ in range(max(1, round(pose_hz * tick))):
                    self._seq += 1
                    azimuth = 90.0 * (self._seq - first_seq) / pose_hz  # a quarter turn per second
                    self.channel.send(pose_message(self._seq, azimuth, width, height, scene["radius"], scene["centre"], views=views))
                deadline = max(deadline + tick, time.monotonic())
                await asyncio.sleep(deadline - time.monotonic())

        sender = asyncio.create_task(send_poses())
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds:
                frame = await asyncio.wait_for(self.track.recv(), 10.0)
                decoded += 1
                size = (frame.width, frame.height)
                info = self.frame_messages.get(frame.pts)
                if info is not None and info["seq"] >= first_seq:
                    matched += 1
                    if info["seq"] not in reported:  # first frame showing that pose
                        reported.add(info["seq"])
                        latencies.append(time.monotonic() * 1e3 - info["t"])
        finally:
            sender.cancel()
        return ViewerReport(time.monotonic() - start, decoded, matched, latencies, size)

    async def close(self) -> None:
        await self.pc.close()


async def _answer(request) -> dict:
    """The JSON answer of a request to the server; a RuntimeError with its reason unless 200."""
    async with request as response:
        answer = await response.json()
        if response.status != 200:
            raise RuntimeError(f"{response.url.path}: {response.status}: {answer}")
        return answer


async def _run(args: argparse.Namespace) -> dict:
    async with aiohttp.ClientSession() as http:
        scene = await _answer(http.get(f"{args.url}/scene"))
        ice = await _answer(http.post(f"{args.url}/ice", json={}))
    viewer = Viewer(aiortc_release=args.aiortc_release, ice_servers=viewer_ice_servers(ice))
    try:
        await viewer.connect(args.url)
        report = await viewer.orbit(scene, args.seconds, args.width, args.height, 2 if args.stereo else 1, args.pose_hz)
    finally:
        await viewer.close()
    return report.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description="Watch a splatcast stream and report fps and pose->decoded latency as JSON.")
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--stereo", action="store_true")
    parser.add_argument("--pose-hz", type=float, default=60.0)
    parser.add_argument("--aiortc-release", action="store_true", help="release frames as aiortc does, when the next frame's first packet arrives")
    parser.add_argument("--no-decode", action="store_true", help="count and pair frames as they are reassembled, without decoding them (a load generator)")
    args = parser.parse_args()
    if args.no_decode:
        skip_decoding()
    try:
        report = asyncio.run(_run(args))
    except (aiohttp.ClientError, RuntimeError, TimeoutError) as error:  # no server there, or it refused: one line on stderr
        sys.exit(f"viewer: {type(error).__name__}: {error}")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
