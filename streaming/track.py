"""The video track of one session: its newest pose, its frame slots, its encoder, its packets.

The render loop (``render_loop``) decides when a frame is made; the track holds the per-session
state that decision needs. Poses overwrite each other (a frame of a stale pose is worth nothing),
and a frame is only started when the previous one has been handed to aiortc: an encoded frame is
never dropped (later frames reference it), an unrendered slot is, so nothing queues.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..engine.cameras import Views
from .encoders import RTP_CLOCK, VideoEncoder
from .frames import RenderedFrame
from .pacing import FramePacer
from .protocol import PoseRequest

FrameCallback = Callable[[PoseRequest | None, int, dict[str, float]], None]
MAX_LATE_START = 0.25
"""Of a frame interval: a frame started this late still comes 3/4 of an interval before the next
slot, the closest the pacer ever puts two frames."""


def checked_late_start(value: float) -> float:
    if not 0.0 <= value <= MAX_LATE_START:
        raise ValueError(f"late start must be between 0 and {MAX_LATE_START} of a frame interval, got {value}")
    return value


@dataclass(frozen=True)
class FrameJob:
    """What one frame shows and when: taken by the render loop, finished by ``encode``."""

    views: Views
    pose: PoseRequest | None
    pts: int
    keyframe: bool


class AvatarTrack(MediaStreamTrack):
    kind = "video"

    def __init__(
        self,
        default_views: Views,
        fps: int = 60,
        bitrate_bounds: tuple[int, int, int] = (300_000, 3_000_000, 12_000_000),
        encoder_threads: int = 0,
        on_frame: FrameCallback | None = None,
        late_start: float = 0.0,
    ) -> None:
        """``encoder_threads`` goes to the encoder as it is (0: FFmpeg's choice); the server
        passes ``ServerConfig.session_encoder_threads()``. ``late_start``: the fraction of a frame
        interval (at most 1/4) by which a frame may start after its slot while the previous one
        is still out, instead of the slot being skipped (``ServerConfig.late_start``)."""
        super().__init__()
        self.late_start = checked_late_start(late_start)
        self.fps = fps
        self.bitrate_bounds = bitrate_bounds
        self.encoder_threads = encoder_threads
        self.target_bitrate = bitrate_bounds[1]
        self.on_frame = on_frame
        self.codec_mime: str | None = None
        self.frames_sent = 0
        self.keyframes_sent = 0
        self.frames_skipped = 0
        self._delivered_at: deque[float] = deque(maxlen=4 * fps)
        self._default_views = default_views
        self._pose: PoseRequest | None = None
        self._keyframe_requested = False
        self._encoder: VideoEncoder | None = None
        self.pacer = FramePacer(fps)
        """When frames are due; its ``base`` comes from the render loop."""
        self._start: float | None = None
        self._busy = False
        self._sending = False
        """aiortc's sender has taken a frame: before that (DTLS still connecting) the first frame
        waits unsent, and the slots it holds up are not counted as skipped."""
        self._packet: asyncio.Future[av.Packet] = asyncio.get_running_loop().create_future()
        self.on_free: Callable[[], None] | None = None
        """Called when the previous frame goes out while a slot waits for it: the render loop,
        which may start the late frame now."""
        self._slot_waiting = False  # not ``_waiting``: pyee's event emitter, a base class, keeps its futures there

    def delivered_fps(self) -> float:
        """Frames handed to aiortc during the last second."""
        horizon = time.monotonic() - 1.0
        return float(sum(1 for t in self._delivered_at if t > horizon))

    def update_pose(self, pose: PoseRequest) -> bool:
        """Keep ``pose`` if it is newer than the one held; False if it was stale."""
        if self._pose is not None and pose.seq <= self._pose.seq:
            return False
        self._pose = pose
        self.pacer.pose_arrived(pose.received_at)
        return True

    def request_keyframe(self) -> None:
        self._keyframe_requested = True

    def set_target_bitrate(self, bitrate: int) -> None:
        """Follow the receiver's estimate (REMB), within the configured bounds."""
        low, _, high = self.bitrate_bounds
        self.target_bitrate = max(low, min(high, bitrate))

    def next_slot(self) -> float:
        """Monotonic time of this track's next frame slot."""
        return self.pacer.next_slot

    def _late_start_ends(self) -> float:
        return self.pacer.next_slot + self.late_start / self.fps

    def wake_at(self, now: float) -> float:
        """When the render loop should look at this track again: its next slot, or while its
        previous frame is still out past that slot, the end of the late start (``on_free`` wakes
        the loop sooner when the frame goes out)."""
        if self._busy and now >= self.pacer.next_slot:
            return self._late_start_ends()
        return self.pacer.next_slot

    def ready(self, now: float) -> bool:
        """A frame is due, a codec is negotiated and the previous frame has gone to aiortc. A
        slot whose previous frame is still out waits up to ``late_start``, then is skipped."""
        if self.readyState != "live" or self.codec_mime is None or now < self.pacer.next_slot:
            return False
        if self._busy:
            self._slot_waiting = now < self._late_start_ends()
            if self._slot_waiting:
                return False
            if self._sending:
                self.frames_skipped += 1
            self.pacer.advance(now)
            return False
        return True

    def take_job(self, now: float) -> FrameJob:
        if self._start is None:
            self._start = now
        pts = int((now - self._start) * RTP_CLOCK)
        self.pacer.advance(now)
        pose, keyframe = self._pose, self._keyframe_requested
        self._keyframe_requested = False
        self._busy = True
        return FrameJob(pose.views() if pose is not None else self._default_views, pose, pts, keyframe)

    def encode(self, job: FrameJob, rendered: RenderedFrame) -> tuple[list[av.Packet], dict[str, float]]:
        """Runs on an encoder worker; one at a time per track."""
        if self._encoder is None:
            self._encoder = VideoEncoder(self.codec_mime, self.fps, self.target_bitrate, self.encoder_threads)
        self._encoder.bitrate = self.target_bitrate
        rendered.frame.pts = job.pts
        start = time.perf_counter()
        packets = self._encoder.encode(rendered.frame, job.keyframe)
        timings = {"render_ms": rendered.render_ms, "convert_ms": rendered.convert_ms, "encode_ms": 1e3 * (time.perf_counter() - start)}
        return packets, timings

    def deliver(self, job: FrameJob, packets: list[av.Packet], timings: dict[str, float]) -> None:
        """Hand an encoded frame to ``recv`` (event loop thread)."""
        if not packets:  # an encoder still buffering; nothing to send for this slot
            self._busy = False
            return
        # Encoders that emit several packets per frame are joined into one access unit:
        # aiortc sends one packet per recv().
        packet = packets[0] if len(packets) == 1 else av.Packet(b"".join(bytes(p) for p in packets))
        packet.pts, packet.time_base = job.pts, packets[0].time_base
        self.frames_sent += 1
        self.keyframes_sent += any(p.is_keyframe for p in packets)
        self._delivered_at.append(time.monotonic())
        if not self._packet.done():
            self._packet.set_result(packet)
        if self.on_frame is not None:
            self.on_frame(job.pose, job.pts, timings)

    def fail(self, error: BaseException) -> None:
        """End the stream: ``recv`` raises, which stops aiortc's sender, and the track ends
        (its "ended" event closes the session)."""
        if not self._packet.done():
            self._packet.set_exception(MediaStreamError(str(error)))
            self._packet.exception()  # retrieved here, so an unawaited failure logs nothing
        if self.readyState == "live":
            self.stop()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._packet
        self._packet = asyncio.get_running_loop().create_future()
        self._busy, self._sending = False, True
        if self._slot_waiting:
            self._slot_waiting = False
            if self.on_free is not None:
                self.on_free()
        return packet

    def stop(self) -> None:
        super().stop()
        self.fail(MediaStreamError("track stopped"))
