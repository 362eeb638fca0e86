"""Pose-to-frame latency on a GPU machine, measured two ways (issue: real-time at scale).

1. In process: pose message parsed -> encoded packet ready, split into render, colour conversion
   (with the copy to the host) and encode, for 720p and 1080p, mono and stereo.
2. Loopback WebRTC at 60 fps, 720p and 1080p, mono and stereo (per-eye size): the server in this
   process, a real aiortc viewer in another process sending poses at 60 Hz over 127.0.0.1; pose
   sent -> frame decoded, matched through the frame messages.
   The viewer releases each frame to its decoder at the frame's last packet, as browsers do
   (``streaming.jitterbuffer``); ``release=aiortc`` runs it with aiortc's own receiver, which
   waits for the next frame's first packet, one frame interval later, for comparison.

    python -m pytest benchmarks/test_latency_gpu.py --benchmark-json=benchmarks/results/latency-<device>.json
"""

import asyncio
import itertools
import json
import statistics
import sys
import time

import pytest
from aiohttp.test_utils import TestServer

from splatcast.config import sample_avatar_path, usable_cpu_count
from splatcast.engine.cameras import frame_bounds
from splatcast.engine.formats import load_asset
from splatcast.streaming.encoders import VideoEncoder, h264_codec_name
from splatcast.streaming.frames import FrameRenderer
from splatcast.streaming.protocol import SizeLimits, parse_pose
from splatcast.streaming.server import ServerConfig, create_app
from splatcast.streaming.viewer import pose_message

pytestmark = pytest.mark.gpu
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
FRAMES = 200
WARMUP = 10
ORBIT_STEPS = 180
"""2 degrees a frame: a quick head turn at 60 fps."""


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)  # noqa: E731
    return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "mean": round(statistics.fmean(ordered), 3)}


def orbit(renderer: FrameRenderer, width: int, height: int, views: int = 1, steps: int = ORBIT_STEPS) -> list[str]:
    """Pose messages of a camera circling the avatar in ``steps`` even steps, as a client sends them."""
    centre, radius = frame_bounds(*renderer.cloud.bounds(), 40.0)
    return [pose_message(i, 360.0 * i / steps, width, height, radius, centre, views=views) for i in range(steps)]


@pytest.fixture(scope="module")
def renderer() -> FrameRenderer:
    return FrameRenderer(load_asset(sample_avatar_path()))


def time_in_process(benchmark, renderer: FrameRenderer, size: str, views: int, encoder_threads: int) -> None:
    """Pose message parsed -> encoded packet, by stage, over FRAMES timed frames of the orbit."""
    width, height = SIZES[size]
    poses = itertools.cycle(orbit(renderer, width, height, views))
    encoder = VideoEncoder("video/H264", fps=60, bitrate=8_000_000, threads=encoder_threads)
    limits, counter = SizeLimits(2064, 2208), itertools.count()
    stages: dict[str, list[float]] = {"total_ms": [], "render_ms": [], "convert_ms": [], "encode_ms": []}

    def frame():
        start = time.perf_counter()
        (rendered,) = renderer.render(parse_pose(next(poses), limits).views())
        rendered.frame.pts = next(counter) * 1500
        encode_start = time.perf_counter()
        encoder.encode(rendered.frame)
        done = time.perf_counter()
        stages["total_ms"].append(1e3 * (done - start))
        stages["render_ms"].append(rendered.render_ms)
        stages["convert_ms"].append(rendered.convert_ms)
        stages["encode_ms"].append(1e3 * (done - encode_start))

    benchmark.pedantic(frame, rounds=FRAMES, warmup_rounds=WARMUP)
    # The timed rounds only: the warm-up's first frame opens the encoder and is a keyframe.
    timed = {k: percentiles(v[-FRAMES:]) for k, v in stages.items()}
    benchmark.extra_info.update({"encoder": h264_codec_name(), "encoder_threads": encoder_threads, "gaussians": len(renderer.cloud), **timed})


@pytest.mark.parametrize("views", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("size", list(SIZES))
def test_in_process_pose_to_encoded(benchmark, renderer, size, views):
    """The encoder with FFmpeg's choice of threads (for libx264's slices: one a core)."""
    time_in_process(benchmark, renderer, size, views, encoder_threads=0)


@pytest.mark.parametrize("encoder_threads", [max(1, usable_cpu_count() // 2)], ids=lambda t: f"1080p-mono-{t}-threads")
def test_in_process_1080p_encoder_on_half_the_cores(benchmark, renderer, encoder_threads):
    """Whether the 1080p p99 is the slices' wait for a busy core: with one slice a core, a frame
    waits for its last slice whenever anything else on the host takes a core."""
    time_in_process(benchmark, renderer, "1080p", 1, encoder_threads)


@pytest.mark.parametrize("threads", [1, 2, 4, 8, 0], ids=lambda t: f"threads={t or 'auto'}")
def test_x264_1080p_encode_by_threads(benchmark, renderer, threads):
    """libx264's encode time for one rendered 1080p frame against its thread count: what one
    session's latency gains from slices, and what many sessions pay for them."""
    limits = SizeLimits(1920, 1080)
    frames = [renderer.render(parse_pose(pose, limits).views())[0].frame for pose in orbit(renderer, 1920, 1080)[:60]]
    encoder = VideoEncoder("video/H264", fps=60, bitrate=8_000_000, threads=threads)
    counter = itertools.count()

    def encode():
        index = next(counter)
        frame = frames[index % len(frames)]
        frame.pts = index * 1500
        encoder.encode(frame)

    benchmark.pedantic(encode, rounds=120, warmup_rounds=WARMUP)
    benchmark.extra_info.update({"threads": threads, "encoder": h264_codec_name()})


@pytest.mark.parametrize("release", ["marker", "aiortc"])
@pytest.mark.parametrize("views", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("size", list(SIZES))
def test_loopback_pose_to_decoded_60fps(benchmark, size, views, release):
    width, height = SIZES[size]

    async def run() -> dict:
        config = ServerConfig(fps=60, width=width, height=height, max_width=width, max_height=height, max_sessions=4)
        async with TestServer(create_app({"sample": load_asset(sample_avatar_path())}, config), host="127.0.0.1") as server:
            url = str(server.make_url("")).rstrip("/")
            viewer = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "splatcast.streaming.viewer", url, "--seconds", "10", "--width", str(width), "--height", str(height),
                *(["--stereo"] if views == 2 else []), *(["--aiortc-release"] if release == "aiortc" else []),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await viewer.communicate()
            return json.loads(out.decode().strip().splitlines()[-1])

    report = benchmark.pedantic(lambda: asyncio.run(run()), rounds=1, iterations=1)
    benchmark.extra_info.update(report, size=size, views=views, release=release)
    assert report["frames_matched"] > 0
