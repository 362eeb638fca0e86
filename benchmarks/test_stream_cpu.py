"""Pose -> encoded frame, in process, at 640x480 on the CPU with the reference renderer.

Split into the stages a frame goes through: pose parsing and render, RGB -> I420 conversion
(libswscale), H.264 encode (libx264 ultrafast/zerolatency); and, on the viewer's side, what
decoding a 720p frame costs (what the session sweep's ``--no-decode`` viewers save). Run:

    python -m pytest benchmarks/test_stream_cpu.py --benchmark-json=benchmarks/results/cpu-stream-640x480.json
"""

import itertools

import av
import pytest
from aiortc.codecs.h264 import H264Decoder
from aiortc.jitterbuffer import JitterFrame

from splatcast.config import sample_avatar_path
from splatcast.engine.cameras import frame_bounds
from splatcast.engine.formats import load_asset
from splatcast.kernels import reference
from splatcast.streaming.encoders import VideoEncoder
from splatcast.streaming.frames import FrameRenderer, side_by_side
from splatcast.streaming.protocol import SizeLimits, parse_pose
from splatcast.streaming.viewer import ArrivalDecoder, pose_message

WIDTH, HEIGHT = 640, 480
ROUNDS = 40


@pytest.fixture(scope="module")
def renderer() -> FrameRenderer:
    return FrameRenderer(load_asset(sample_avatar_path()), device="cpu")


@pytest.fixture(scope="module")
def pose_messages(renderer):
    centre, radius = frame_bounds(*renderer.cloud.bounds(), 40.0)
    # A slow orbit, as a dragging viewer produces: every frame a new pose.
    return itertools.cycle([pose_message(i, 3.0 * i, WIDTH, HEIGHT, radius, centre) for i in range(120)])


def test_render(benchmark, renderer, pose_messages):
    limits = SizeLimits()

    def render():
        views = parse_pose(next(pose_messages), limits).views()
        return reference.render(renderer.cloud, views, renderer.background)

    benchmark.pedantic(render, rounds=ROUNDS, warmup_rounds=3)


def test_convert_rgb_to_i420(benchmark, renderer, pose_messages):
    views = parse_pose(next(pose_messages), SizeLimits()).views()
    rgb = reference.to_uint8(side_by_side(reference.render(renderer.cloud, views))).numpy()
    benchmark.pedantic(lambda: av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"), rounds=ROUNDS * 5, warmup_rounds=3)


def test_encode_h264(benchmark, renderer, pose_messages):
    frames = [renderer.render(parse_pose(next(pose_messages), SizeLimits()).views())[0].frame for _ in range(30)]
    encoder = VideoEncoder("video/H264", fps=60)
    counter = itertools.count()

    def encode():
        i = next(counter)
        frame = frames[i % len(frames)]
        frame.pts = i * 1500
        return encoder.encode(frame)

    benchmark.pedantic(encode, rounds=ROUNDS * 5, warmup_rounds=5)


def test_pose_to_encoded_frame(benchmark, renderer, pose_messages):
    encoder = VideoEncoder("video/H264", fps=60)
    counter = itertools.count()
    limits = SizeLimits()

    def frame():
        (rendered,) = renderer.render(parse_pose(next(pose_messages), limits).views())
        rendered.frame.pts = next(counter) * 1500
        return encoder.encode(rendered.frame)

    benchmark.pedantic(frame, rounds=ROUNDS, warmup_rounds=3)
    benchmark.extra_info["fps"] = 1.0 / benchmark.stats.stats.median


@pytest.fixture(scope="module")
def stream_720p(renderer) -> list[JitterFrame]:
    """Two seconds of a 720p60 orbit of the sample avatar, encoded as the server encodes it."""
    centre, radius = frame_bounds(*renderer.cloud.bounds(), 40.0)
    encoder = VideoEncoder("video/H264", fps=60)
    frames = []
    for i in range(120):
        (rendered,) = renderer.render(parse_pose(pose_message(i, 1.5 * i, 1280, 720, radius, centre), SizeLimits()).views())
        rendered.frame.pts = i * 1500
        frames += [JitterFrame(bytes(packet), i * 1500) for packet in encoder.encode(rendered.frame)]
    return frames


@pytest.mark.parametrize("decoder", [H264Decoder, ArrivalDecoder], ids=["aiortc-h264", "no-decode"])
def test_viewer_decode_720p(benchmark, stream_720p, decoder):
    """One round: the whole stream from its keyframe through a fresh decoder; per frame = / 120."""

    def decode_stream():
        receiver = decoder()
        return sum(len(receiver.decode(frame)) for frame in stream_720p)

    frames = benchmark.pedantic(decode_stream, rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(frames=len(stream_720p), frames_out=frames, ms_per_frame=1e3 * benchmark.stats.stats.median / len(stream_720p))
