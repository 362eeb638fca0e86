"""The video track of one session: newest pose in, encoded packet out, paced at the stream rate.

aiortc pulls ``recv()`` in a loop. Each call waits for the next frame slot, takes the newest pose
(older ones were simply overwritten: a late frame of a stale pose is worth nothing), renders,
converts and encodes it off the event loop, and returns the ``av.Packet`` for aiortc to send.
If rendering falls behind, slots are skipped rather than queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..kernels.cameras import Views
from .encoders import RTP_CLOCK, VideoEncoder
from .frames import FrameRenderer
from .protocol import PoseRequest

FrameCallback = Callable[[PoseRequest, int, dict[str, float]], None]


class AvatarTrack(MediaStreamTrack):
    kind = "video"

    def __init__(
        self,
        renderer: FrameRenderer,
        default_views: Views,
        executor: Executor,
        fps: int = 60,
        bitrate: int = 4_000_000,
        on_frame: FrameCallback | None = None,
    ) -> None:
        super().__init__()
        self.renderer = renderer
        self.executor = executor
        self.fps = fps
        self.bitrate = bitrate
        self.on_frame = on_frame
        self.codec_mime: str | None = None
        self.frames_sent = 0
        self.keyframes_sent = 0
        self._encoder: VideoEncoder | None = None
        self._default_views = default_views
        self._pose: PoseRequest | None = None
        self._keyframe_requested = False
        self._start: float | None = None
        self._next_slot = 0.0

    @property
    def newest_seq(self) -> int:
        return -1 if self._pose is None else self._pose.seq

    def update_pose(self, pose: PoseRequest) -> bool:
        """Keep ``pose`` if it is newer than the one held; False if it was stale."""
        if self._pose is not None and pose.seq <= self._pose.seq:
            return False
        self._pose = pose
        return True

    def request_keyframe(self) -> None:
        self._keyframe_requested = True

    async def _wait_for_slot(self) -> int:
        """Sleep until the next frame slot; returns its presentation time in 90 kHz ticks."""
        now = time.monotonic()
        if self._start is None:
            self._start = self._next_slot = now
        elif now - self._next_slot > 1 / self.fps:
            self._next_slot = now  # behind: skip the missed slots, never queue them
        else:
            await asyncio.sleep(max(0.0, self._next_slot - now))
        slot = self._next_slot
        self._next_slot += 1 / self.fps
        return int((slot - self._start) * RTP_CLOCK)

    def _produce(self, pose: PoseRequest | None, keyframe: bool, pts: int) -> tuple[list[av.Packet], dict[str, float]]:
        views = pose.views() if pose is not None else self._default_views
        rendered = self.renderer.render(views)
        rendered.frame.pts = pts
        start = time.perf_counter()
        packets = self._encoder.encode(rendered.frame, keyframe)
        encode_ms = 1e3 * (time.perf_counter() - start)
        return packets, {"render_ms": rendered.render_ms, "convert_ms": rendered.convert_ms, "encode_ms": encode_ms}

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._encoder is None:
            if self.codec_mime is None:
                raise MediaStreamError("no codec negotiated")
            self._encoder = VideoEncoder(self.codec_mime, self.fps, self.bitrate)
        while True:
            pts = await self._wait_for_slot()
            pose, keyframe = self._pose, self._keyframe_requested
            self._keyframe_requested = False
            packets, timings = await asyncio.get_running_loop().run_in_executor(self.executor, self._produce, pose, keyframe, pts)
            if self.readyState != "live":
                raise MediaStreamError
            if packets:
                break
        self.frames_sent += 1
        self.keyframes_sent += any(p.is_keyframe for p in packets)
        if pose is not None and self.on_frame is not None:
            self.on_frame(pose, pts, timings)
        # Encoders that emit several packets per frame (rare at zero latency) are joined into one
        # access unit: aiortc sends one packet per recv().
        packet = packets[0] if len(packets) == 1 else av.Packet(b"".join(bytes(p) for p in packets))
        packet.pts, packet.time_base = pts, packets[0].time_base
        return packet
