"""A video jitter buffer that releases each frame when its last packet is in, as browsers do.

aiortc's ``JitterBuffer`` knows a frame is complete only when a packet of the next frame arrives,
so every frame waits one frame interval (16.7 ms at 60 fps) in the receiver before it is decoded.
The sender marks a frame's last packet (the RTP marker bit, RFC 6184 section 5.1; aiortc's sender
sets it): with every packet from the frame's first to that one in, the frame is whole. Where the
sender marks nothing, the next frame's first packet still ends a frame, as in aiortc. A missing
packet holds its frame back in both, until it comes (retransmitted) or the buffer gives up on it.
"""

from __future__ import annotations

import aiortc
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

_RECEIVER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
"""Where aiortc's receiver keeps its jitter buffer: it has no option to choose one."""


class MarkerJitterBuffer(JitterBuffer):
    """``JitterBuffer`` for video that ends a frame at its marked packet."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None:
                return None  # a packet of this frame is still missing
            if packets and packet.timestamp != packets[0].timestamp:
                break  # an unmarked frame: the next frame's start ends it
            packets.append(packet)
            if packet.marker:
                count += 1
                break
        else:
            return None
        self.remove(count)
        return JitterFrame(data=b"".join(p._data for p in packets), timestamp=packets[0].timestamp)


def release_frames_on_marker(receiver: RTCRtpReceiver) -> None:
    """Give a video ``receiver`` a ``MarkerJitterBuffer`` of the same capacity as its own."""
    current = getattr(receiver, _RECEIVER_BUFFER, None)
    if not isinstance(current, JitterBuffer):
        raise RuntimeError(f"aiortc {aiortc.__version__} keeps no jitter buffer where splatcast replaces it ({_RECEIVER_BUFFER})")
    setattr(receiver, _RECEIVER_BUFFER, MarkerJitterBuffer(current.capacity, is_video=True))
