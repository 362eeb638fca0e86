"""Session sweep on a GPU machine: N concurrent 720p60 loopback sessions, each viewer in its own
process so that the server is what gets measured.

Per N: delivered fps per session (server side, min and median; and what each viewer decoded),
viewers' pose -> decoded latency, the server's pose -> encoded p99 (upper edge of its histogram
bucket), GPU time per render tick, and the server process's CPU use. Plot with
``python benchmarks/plot_sessions.py benchmarks/results/sessions-<device>.json``.

    python -m pytest benchmarks/test_sessions_gpu.py --benchmark-json=benchmarks/results/sessions-<device>.json
"""

import asyncio
import json
import os
import statistics
import sys
import time

import pytest
from aiohttp.test_utils import TestServer

from splatcast.config import sample_avatar_path
from splatcast.engine.formats import load_asset
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app

pytestmark = pytest.mark.gpu
VIEWER_SECONDS = 16.0
"""Each viewer's run: long enough to connect, settle, and outlast the server's measuring window."""
WINDOW_SECONDS = 4.0


def histogram_quantile(histogram, q: float) -> float | None:
    """Upper edge (ms) of the bucket holding quantile ``q`` of a prometheus_client Histogram."""
    buckets = [(s.labels["le"], s.value) for metric in histogram.collect() for s in metric.samples if s.name.endswith("_bucket")]
    total = buckets[-1][1] if buckets else 0
    for edge, count in buckets:
        if total and count >= q * total:
            return float(edge) * 1e3 if edge != "+Inf" else None
    return None


def histogram_mean_ms(histogram) -> float | None:
    samples = {s.name: s.value for metric in histogram.collect() for s in metric.samples}
    count = next((v for k, v in samples.items() if k.endswith("_count")), 0)
    total = next((v for k, v in samples.items() if k.endswith("_sum")), 0)
    return 1e3 * total / count if count else None


@pytest.mark.parametrize("sessions", [1, 2, 4, 8, 16, 32, 64])
def test_concurrent_720p60_sessions(benchmark, sessions):
    async def run() -> dict:
        config = ServerConfig(fps=60, width=1280, height=720, max_sessions=sessions, sessions_per_address=sessions, idle_timeout=60)
        async with TestServer(create_app({"sample": load_asset(sample_avatar_path())}, config), host="127.0.0.1") as server:
            srv = server.app[SERVER_KEY]
            url = str(server.make_url("")).rstrip("/")
            viewers = [
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "splatcast.streaming.viewer", url, "--seconds", str(VIEWER_SECONDS), "--width", "1280", "--height", "720",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                )
                for _ in range(sessions)
            ]
            for _ in range(300):  # every viewer connected and streaming
                if len(srv.sessions) == sessions and all(s.track.frames_sent > 30 for s in srv.sessions.sessions.values()):
                    break
                await asyncio.sleep(0.1)
            tracks = [s.track for s in srv.sessions.sessions.values()]
            sent = [t.frames_sent for t in tracks]
            cpu, wall, ticks = time.process_time(), time.monotonic(), srv.render_loop.ticks
            await asyncio.sleep(WINDOW_SECONDS)
            wall = time.monotonic() - wall
            fps = [(t.frames_sent - n) / wall for t, n in zip(tracks, sent)]
            cpu_use = (time.process_time() - cpu) / wall
            ticks = srv.render_loop.ticks - ticks
            reports = [json.loads((await v.communicate())[0].decode().strip().splitlines()[-1]) for v in viewers]
            return {
                "sessions": sessions,
                "connected": len(tracks),
                "server_fps_min": round(min(fps), 2) if fps else 0.0,
                "server_fps_median": round(statistics.median(fps), 2) if fps else 0.0,
                "viewer_fps_min": min(r["fps"] for r in reports),
                "viewer_fps_median": statistics.median(r["fps"] for r in reports),
                "viewer_latency_ms_p50_median": statistics.median(r["latency_ms_p50"] for r in reports if r["latency_ms_p50"] is not None),
                "server_pose_to_encoded_ms_p99_at_most": histogram_quantile(srv.metrics.pose_to_encoded, 0.99),
                "render_ms_per_tick_mean": histogram_mean_ms(srv.metrics.render),
                "ticks_per_s": round(ticks / wall, 1),
                "server_cpu_cores_busy": round(cpu_use, 2),
                "cpu_cores": os.cpu_count(),
            }

    report = benchmark.pedantic(lambda: asyncio.run(run()), rounds=1, iterations=1)
    benchmark.extra_info.update(report)
    assert report["connected"] == sessions
