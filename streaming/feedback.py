"""Receiver feedback that must reach splatcast's own encoder.

aiortc answers a PLI or FIR by flagging the encoder it owns for a keyframe; a track that hands
aiortc pre-encoded packets bypasses that encoder, and ``RTCRtpSender`` offers no public hook for
it. So the sender's one keyframe entry point is extended, per sender, to tell the track too.
"""

from __future__ import annotations

from aiortc import RTCRtpSender

from .track import AvatarTrack


def forward_keyframe_requests(sender: RTCRtpSender, track: AvatarTrack) -> None:
    """Make every PLI/FIR the peer sends produce a keyframe from ``track``'s encoder."""
    flag_own_encoder = sender._send_keyframe

    def send_keyframe() -> None:
        flag_own_encoder()
        track.request_keyframe()

    sender._send_keyframe = send_keyframe
