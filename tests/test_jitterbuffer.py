"""The viewer's jitter buffer: real H.264 frames from libx264, packetized by aiortc's own H.264
packer with the marker bit on each frame's last packet, as aiortc's sender sends them."""

import fractions
import random

import av
import numpy as np
import pytest
from aiortc.codecs import depayload
from aiortc.codecs.h264 import H264Encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from splatcast.streaming.jitterbuffer import MarkerJitterBuffer
from splatcast.streaming.viewer import Viewer

H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90_000, payloadType=102)
WIDTH, HEIGHT = 640, 360


def encoded_frames(count: int) -> list[av.Packet]:
    """libx264 packets of a noisy moving picture: large enough to span several RTP packets."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90_000)
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency"}
    rng = np.random.default_rng(0)
    packets = []
    for i in range(count):
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i * 1500
        packets += encoder.encode(frame)
    return packets


def rtp_frames(count: int, first_sequence: int = 0) -> list[list[RtpPacket]]:
    """Each frame's RTP packets, payloads depayloaded as aiortc's receiver does before its buffer."""
    packer, frames, sequence = H264Encoder(), [], first_sequence
    for encoded in encoded_frames(count):
        payloads, timestamp = packer.pack(encoded)
        frame = []
        for i, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=H264.payloadType, marker=int(i == len(payloads) - 1), sequence_number=sequence % 65536, timestamp=timestamp, payload=payload)
            packet._data = depayload(H264, payload)
            frame.append(packet)
            sequence += 1
        frames.append(frame)
    assert all(len(frame) > 2 for frame in frames), "each frame should span several packets"
    return frames


def frame_bytes(packets: list[RtpPacket]) -> bytes:
    return b"".join(p._data for p in packets)


def decodes_to_picture(data: bytes) -> bool:
    decoder = av.CodecContext.create("h264", "r")
    pictures = decoder.decode(av.Packet(data))
    return len(pictures) == 1 and (pictures[0].width, pictures[0].height) == (WIDTH, HEIGHT)


@pytest.mark.parametrize("first_sequence", [0, 65536 - 5], ids=["start", "sequence-wrap"])
def test_each_frame_is_released_at_its_marked_packet(first_sequence):
    frames = rtp_frames(3, first_sequence)
    buffer = MarkerJitterBuffer(capacity=512, is_video=True)
    for frame in frames:
        released = [buffer.add(packet)[1] for packet in frame]
        assert all(r is None for r in released[:-1]), "released before its last packet was in"
        assert released[-1] is not None and released[-1].timestamp == frame[0].timestamp
        assert released[-1].data == frame_bytes(frame)
    assert decodes_to_picture(frame_bytes(frames[0]))


def test_aiortc_buffer_holds_the_frame_until_the_next_one_starts():
    """What the marker buffer removes: aiortc's own releases a frame one packet of the next frame later."""
    frames = rtp_frames(2)
    buffer = JitterBuffer(capacity=512, is_video=True)
    assert all(buffer.add(packet)[1] is None for packet in frames[0])
    assert buffer.add(frames[1][0])[1].data == frame_bytes(frames[0])


def test_a_frame_with_a_late_packet_is_released_when_the_gap_fills():
    """Packets out of order, or one lost and retransmitted (NACK): the marked packet comes before
    an earlier one, and the frame waits for it."""
    first, second = rtp_frames(2)
    buffer = MarkerJitterBuffer(capacity=512, is_video=True)
    assert [buffer.add(packet)[1] is None for packet in first] == [True] * (len(first) - 1) + [False]
    late, rest = second[1], second[:1] + second[2:]
    random.Random(0).shuffle(rest[1:])
    assert all(buffer.add(packet)[1] is None for packet in rest)
    assert buffer.add(late)[1].data == frame_bytes(second)


def test_frames_of_a_sender_that_marks_nothing_end_where_the_next_frame_starts():
    first, second = rtp_frames(2)
    for packet in first + second:
        packet.marker = 0
    buffer = MarkerJitterBuffer(capacity=512, is_video=True)
    assert all(buffer.add(packet)[1] is None for packet in first)
    assert buffer.add(second[0])[1].data == frame_bytes(first)


@pytest.mark.parametrize("aiortc_release, buffer_type", [(False, MarkerJitterBuffer), (True, JitterBuffer)])
async def test_the_viewer_chooses_its_receivers_buffer(aiortc_release, buffer_type):
    viewer = Viewer(aiortc_release=aiortc_release)
    try:
        receiver = viewer.pc.getTransceivers()[0].receiver
        assert type(receiver._RTCRtpReceiver__jitter_buffer) is buffer_type
    finally:
        await viewer.close()
