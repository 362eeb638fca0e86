"""Low-latency video encoders that turn rendered frames into packets aiortc sends as they are.

aiortc's own H.264 encoder runs libx264 at preset medium and assumes 30 fps; rather than patch
its module constants, splatcast encodes itself and hands aiortc ready ``av.Packet``s (aiortc then
only packetizes them into RTP). That also lets each frame's encode time be measured and reported.

- H.264: NVENC where the GPU has an encoder (picked once, by trying to open it), else libx264 with
  preset ultrafast, tune zerolatency (no B-frames, no lookahead, sliced threads).
- VP8: libvpx in realtime mode, the fallback when a peer does not negotiate H.264.
A keyframe is produced on request (PLI/FIR) and whenever the frame size changes. The bitrate can be
changed between frames; the codec is reopened (with a keyframe) only when it moves by more than
``BITRATE_HYSTERESIS``, since neither libx264 nor libvpx can retarget an open PyAV context.
"""

from __future__ import annotations

import fractions
import functools
import logging

import av

logger = logging.getLogger(__name__)

RTP_CLOCK = 90_000
TIME_BASE = fractions.Fraction(1, RTP_CLOCK)
BITRATE_HYSTERESIS = 0.25
X264_CRF = 23
KEYFRAME_INTERVAL_S = 10
"""Periodic keyframes are a safety net only: receivers ask for one with PLI when they need it."""


@functools.cache
def h264_codec_name() -> str:
    """``h264_nvenc`` if this machine can open it, else ``libx264``; logged once with the reason."""
    try:
        probe = av.CodecContext.create("h264_nvenc", "w")
        probe.width, probe.height, probe.pix_fmt = 256, 256, "yuv420p"
        probe.time_base = TIME_BASE
        probe.open()
    except Exception as error:  # PyAV raises codec-specific errors; any of them means "no NVENC".
        logger.info("H.264 encoder: libx264 (no usable NVENC: %s)", error)
        return "libx264"
    logger.info("H.264 encoder: h264_nvenc (hardware encoder found)")
    return "h264_nvenc"


def _codec_options(codec_name: str, fps: int, bitrate: int) -> dict[str, str]:
    keyint = str(KEYFRAME_INTERVAL_S * fps)
    if codec_name == "libx264":
        # Constant quality capped by VBV rather than a bits-per-frame budget: when the renderer
        # delivers fewer frames than ``fps`` (a CPU), each frame still gets the bits it needs.
        kbps = bitrate // 1000
        return {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",  # what browsers negotiate for WebRTC (42e01f)
            "x264-params": f"keyint={keyint}:bframes=0:repeat-headers=1:crf={X264_CRF}:vbv-maxrate={kbps}:vbv-bufsize={kbps // 2}",
        }
    if codec_name == "h264_nvenc":
        return {"preset": "p1", "tune": "ull", "zerolatency": "1", "delay": "0", "bf": "0", "rc": "cbr", "profile": "baseline", "g": keyint}
    if codec_name == "libvpx":
        return {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1", "g": keyint}
    raise ValueError(f"no options for codec {codec_name}")


class VideoEncoder:
    """One stream's encoder: ``encode(frame, keyframe) -> [av.Packet]`` with pts in 90 kHz ticks."""

    def __init__(self, mime_type: str, fps: int = 60, bitrate: int = 4_000_000, threads: int = 0) -> None:
        """``threads``: the codec's threads (libx264 under zerolatency: one slice each); 0 lets
        FFmpeg choose from the core count."""
        mime = mime_type.lower()
        if mime == "video/h264":
            self.codec_name = h264_codec_name()
        elif mime == "video/vp8":
            self.codec_name = "libvpx"
        else:
            raise ValueError(f"splatcast cannot encode {mime_type}")
        self.mime_type = mime
        self.fps = fps
        self.bitrate = bitrate
        self.threads = threads
        self._context: av.VideoCodecContext | None = None
        self._opened_bitrate = 0

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        context = av.CodecContext.create(self.codec_name, "w")
        context.width, context.height = width, height
        context.pix_fmt = "yuv420p"
        context.time_base = TIME_BASE
        context.framerate = fractions.Fraction(self.fps, 1)
        if self.codec_name != "libx264":  # x264 runs constant quality under a VBV cap instead
            context.bit_rate = self.bitrate
        context.max_b_frames = 0
        context.thread_count = self.threads
        context.options = _codec_options(self.codec_name, self.fps, self.bitrate)
        context.open()
        self._opened_bitrate = self.bitrate
        return context

    def encode(self, frame: av.VideoFrame, keyframe: bool = False) -> list[av.Packet]:
        """Encode one yuv420p frame whose ``pts`` is in 90 kHz ticks."""
        context = self._context
        if (
            context is None
            or (context.width, context.height) != (frame.width, frame.height)
            or abs(self.bitrate - self._opened_bitrate) > BITRATE_HYSTERESIS * self._opened_bitrate
        ):
            context = self._context = self._open(frame.width, frame.height)
            keyframe = True
        frame.time_base = TIME_BASE
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = context.encode(frame)
        for packet in packets:
            packet.time_base = TIME_BASE
        return packets
