"""Streaming sessions: one peer connection each, a bounded number, none left behind.

A session ends when its peer closes or fails ICE, when its stream fails, when it has been idle
(no pose message and no connection change) for ``idle_timeout`` seconds, or when the server
shuts down; ending it closes the peer connection and the track, and forgets it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCDataChannel, RTCPeerConnection

from .http_errors import RequestRefused
from .metrics import StreamMetrics
from .protocol import PoseError, PoseRequest, SizeLimits, frame_message, parse_pose
from .track import AvatarTrack

logger = logging.getLogger(__name__)


def new_session_id() -> str:
    return secrets.token_urlsafe(9)


@dataclass
class Session:
    pc: RTCPeerConnection
    track: AvatarTrack
    avatar_id: str
    limits: SizeLimits
    metrics: StreamMetrics
    token_id: str | None = None
    address: str | None = None
    id: str = field(default_factory=new_session_id)
    last_activity: float = field(default_factory=time.monotonic)
    channel: RTCDataChannel | None = None
    max_pose_rate: float = 240.0
    """Pose messages per second a client may send (a 120 Hz headset sends 120); the excess is
    dropped unparsed, so a flooding client costs the server next to nothing."""
    bad_poses: int = 0
    stale_poses: int = 0
    flooded_poses: int = 0
    _pose_allowance: float = field(init=False)
    _allowance_at: float = field(default_factory=time.monotonic)
    _last_shown_seq: int = -1

    def __post_init__(self) -> None:
        # The bucket starts full: a client's first poses, sent the moment the channel opens, are
        # never counted as a flood.
        self._pose_allowance = self.max_pose_rate

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def attach_channel(self, channel: RTCDataChannel) -> None:
        """Take poses from ``channel`` and report each frame's pose on it."""
        self.channel = channel
        channel.on("message", self.on_pose_message)

    def _within_rate(self) -> bool:
        """Token bucket of one second's worth of poses."""
        now = time.monotonic()
        self._pose_allowance = min(self.max_pose_rate, self._pose_allowance + (now - self._allowance_at) * self.max_pose_rate)
        self._allowance_at = now
        if self._pose_allowance < 1.0:
            return False
        self._pose_allowance -= 1.0
        return True

    def on_pose_message(self, message: str | bytes) -> None:
        self.touch()
        if not self._within_rate():
            self.flooded_poses += 1
            return
        try:
            pose = parse_pose(message, self.limits)
        except PoseError as error:
            self.bad_poses += 1
            self.metrics.bad_poses.inc()
            logger.debug("session %s: dropped pose message (%s)", self.id, error)
            return
        if not self.track.update_pose(pose):
            self.stale_poses += 1

    def on_frame(self, pose: PoseRequest | None, pts: int, timings: dict[str, float]) -> None:
        self.metrics.convert.observe(timings["convert_ms"] / 1e3)
        self.metrics.encode.observe(timings["encode_ms"] / 1e3)
        if pose is None:
            return
        if pose.seq != self._last_shown_seq:
            self._last_shown_seq = pose.seq
            self.metrics.pose_to_encoded.observe(time.monotonic() - pose.received_at)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(frame_message(pose.seq, pose.client_time, pts, timings))


class SessionLimitError(RequestRefused):
    """No more sessions: for the server (503), or for this token or client address (429)."""


class SessionBook:
    """Sessions counted against the limits: in all, per viewer token and per client address.
    Its entries need only ``token_id`` and ``address``, so a sharded server's front can count
    sessions that live in its workers."""

    def __init__(self, max_sessions: int, per_token: int = 2, per_address: int = 8) -> None:
        self.max_sessions = max_sessions
        self.per_token = per_token
        self.per_address = per_address
        self.sessions: dict = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def reserve(self, token_id: str | None = None, address: str | None = None) -> None:
        """Raise ``SessionLimitError`` if no session can be added for this token and address."""
        if len(self.sessions) >= self.max_sessions:
            raise SessionLimitError(503, f"server is at its limit of {self.max_sessions} sessions; try again later")
        if token_id is not None and sum(s.token_id == token_id for s in self.sessions.values()) >= self.per_token:
            raise SessionLimitError(429, f"this token already has {self.per_token} sessions")
        if address is not None and sum(s.address == address for s in self.sessions.values()) >= self.per_address:
            raise SessionLimitError(429, f"this address already has {self.per_address} sessions")


class SessionManager(SessionBook):
    def __init__(self, max_sessions: int, idle_timeout: float, per_token: int = 2, per_address: int = 8) -> None:
        super().__init__(max_sessions, per_token, per_address)
        self.idle_timeout = idle_timeout
        self.on_close: Callable[[str], None] | None = None
        """Told each ended session's id (a sharded server's worker tells its front)."""
        self._reaper: asyncio.Task | None = None

    def add(self, session: Session) -> None:
        self.reserve(session.token_id, session.address)
        self.sessions[session.id] = session

        @session.pc.on("connectionstatechange")
        async def on_state_change() -> None:
            session.touch()
            if session.pc.connectionState in ("failed", "closed"):
                await self.close(session.id, f"connection {session.pc.connectionState}")

        @session.track.on("ended")
        async def on_stream_ended() -> None:  # its frames failed to render or encode
            await self.close(session.id, "its stream ended")

        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_idle())

    async def close(self, session_id: str, reason: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        logger.info("session %s closed: %s (bad poses %d)", session_id, reason, session.bad_poses)
        if self.on_close is not None:
            self.on_close(session_id)
        session.track.stop()
        await session.pc.close()

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(sid, "server shutting down") for sid in list(self.sessions)))
        if self._reaper is not None:
            self._reaper.cancel()

    async def _reap_idle(self) -> None:
        while self.sessions:
            await asyncio.sleep(min(1.0, self.idle_timeout / 4))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.last_activity > self.idle_timeout:
                    await self.close(session.id, f"idle for {self.idle_timeout:g} s")
