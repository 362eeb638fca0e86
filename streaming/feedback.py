"""Receiver feedback (RTCP) that must reach splatcast's own encoder.

aiortc answers PLI/FIR by flagging the encoder it owns for a keyframe, and REMB by setting that
encoder's bitrate; a track that hands aiortc pre-encoded packets bypasses that encoder, and
``RTCRtpSender`` has no public hook for either. So each sender's RTCP handler is extended to pass
both on to the track after aiortc has handled the packet as usual.
"""

from __future__ import annotations

from aiortc import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, unpack_remb_fci

from .track import AvatarTrack


def forward_feedback(sender: RTCRtpSender, track: AvatarTrack) -> None:
    """Make the peer's keyframe requests and bitrate estimates drive ``track``'s encoder."""
    handle = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet) -> None:
        await handle(packet)
        if not isinstance(packet, RtcpPsfbPacket):
            return
        if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            track.request_keyframe()
        elif packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return  # an application packet that is not REMB
            if sender._ssrc in ssrcs:
                track.set_target_bitrate(bitrate)

    sender._handle_rtcp_packet = handle_rtcp_packet
