"""Session sweep on a GPU machine: N concurrent 720p60 loopback sessions, each viewer in its own
process so that the server is what gets measured.

Per N and per server layout (one process, or sharded over worker processes; set
``SPLATCAST_SWEEP_WORKERS=1,8`` to choose, default 1 and min(cores / 2, 8); each session's
encoder threads from ``SPLATCAST_SWEEP_ENCODER_THREADS``, default 0: the server's default, each session's share of the cores;
Python's switch interval from ``SPLATCAST_SWEEP_SWITCH_INTERVAL_MS``, default 0: Python's 5 ms; the viewers' CPUs from
``SPLATCAST_SWEEP_VIEWER_CPUS``, default: shared with the server; whether viewers decode from
``SPLATCAST_SWEEP_DECODE``, default 0: they count frames as aiortc reassembles them, so that the
host's cores go to the server): delivered fps per session (server side, min and median; and what
each viewer received), viewers' pose -> received latency, the server's pose -> encoded p50 and p99 and its encode p99 over the measuring window (upper edges of
their histogram buckets), GPU time per
render call, and the CPU use of the server processes and of the viewers (which share the host), all read from the server's ``/metrics``. Plot with
``python benchmarks/plot_results.py benchmarks/results/sessions-<device>.json``.

    python -m pytest benchmarks/test_sessions_gpu.py --benchmark-json=benchmarks/results/sessions-<device>.json
"""

import asyncio
import json
import os
import statistics
import sys
import time
from collections import defaultdict

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from splatcast.config import sample_avatar_path, usable_cpu_count
from splatcast.engine.formats import load_asset
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app

pytestmark = pytest.mark.gpu
VIEWER_SECONDS = float(os.environ.get("SPLATCAST_SWEEP_VIEWER_SECONDS", "16"))
"""Each viewer's run: long enough to connect, settle, and outlast the server's measuring window.
Also how long the viewers may take to connect (at least 30 s): many viewers on a few CPUs start
slowly, so give those runs more (``SPLATCAST_SWEEP_VIEWER_SECONDS``)."""
WINDOW_SECONDS = 4.0
WORKER_COUNTS = sorted({int(w) for w in os.environ.get("SPLATCAST_SWEEP_WORKERS", f"1,{min(usable_cpu_count() // 2, 8)}").split(",")})
"""Server processes hosting the sessions: one (``workers=1``) and sharded (``--workers``)."""
ENCODER_THREADS = int(os.environ.get("SPLATCAST_SWEEP_ENCODER_THREADS", "0"))
"""Each session's encoder threads (``--encoder-threads``; 0: the server's default)."""
SWITCH_INTERVAL_MS = float(os.environ.get("SPLATCAST_SWEEP_SWITCH_INTERVAL_MS", "0"))
"""Python's thread switch interval in the processes hosting sessions (``--switch-interval-ms``; 0: Python's 5 ms)."""
LATE_START = float(os.environ.get("SPLATCAST_SWEEP_LATE_START", "0"))
"""How late a session's frame may start while its previous one is still out (``--late-start``,
a fraction of a frame interval; 0: the slot is skipped)."""
VIEWER_CPUS = os.environ.get("SPLATCAST_SWEEP_VIEWER_CPUS", "")
"""CPUs the viewers run on (``taskset`` list syntax, e.g. ``16-31``); empty: wherever the server may.
With the benchmark itself under ``taskset -c 0-15``, the server gets 16 CPUs of its own and the
viewers' decoding no longer competes with it (a 16-core server measured with its clients on other
machines)."""


def cpu_list(text: str) -> set[int]:
    """``taskset``'s list syntax: ``0-3,8,10-11``."""
    cpus = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


VIEWER_CPU_SET = cpu_list(VIEWER_CPUS)
VIEWERS_DECODE = os.environ.get("SPLATCAST_SWEEP_DECODE", "0") == "1"
"""Viewers decode every frame (as a browser would) instead of skipping decoding: on one host their
decoding competes with the server for cores (5.1 cores at 32 sessions in ``sessions-h200-bdfcf86.json``)."""


def pin_viewer() -> None:
    """In a viewer process, before it starts: run on ``VIEWER_CPUS`` only."""
    os.sched_setaffinity(0, VIEWER_CPU_SET)


async def scrape(http: aiohttp.ClientSession, url: str) -> tuple[float, dict[str, list]]:
    """The server's /metrics (a sharded front's covers every worker): when its counters were read
    (the request's midpoint, so that the time to fetch and parse 32 sessions' samples on a busy
    host is not counted as time that frames were sent in), and sample name -> samples."""
    sent_at = time.monotonic()
    async with http.get(f"{url}/metrics") as response:
        exposition = await response.text()
    read_at = (sent_at + time.monotonic()) / 2
    return read_at, samples_of(exposition)


def samples_of(exposition: str) -> dict[str, list]:
    samples = defaultdict(list)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[sample.name].append(sample)
    return samples


def frames_per_session(samples: dict[str, list]) -> dict[tuple, float]:
    return {(s.labels.get("worker"), s.labels["session"]): s.value for s in samples["splatcast_frames_total"]}


def total(samples: dict[str, list], name: str) -> float:
    return sum(s.value for s in samples[name])


def histogram_quantile(before: dict[str, list], after: dict[str, list], name: str, q: float) -> float | None:
    """Upper edge (ms) of the bucket holding quantile ``q`` of what a histogram observed between
    two scrapes (the measuring window, not the sessions' start), summed over workers."""
    counts = defaultdict(float)
    for samples, sign in ((after, 1), (before, -1)):
        for s in samples[f"{name}_bucket"]:
            counts[float(s.labels["le"])] += sign * s.value
    edges = sorted(counts)
    for edge in edges:
        if counts[edges[-1]] and counts[edge] >= q * counts[edges[-1]]:
            return edge * 1e3 if edge != float("inf") else None
    return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes ``pids``."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(worker_pids: list[int]) -> float:
    """This process (the server, or the front of a sharded one) and its workers."""
    return time.process_time() + cpu_seconds(worker_pids)


@pytest.mark.parametrize("sessions", [1, 2, 4, 8, 16, 32, 64])
@pytest.mark.parametrize("workers", WORKER_COUNTS)
def test_concurrent_720p60_sessions(benchmark, workers, sessions):
    async def run() -> dict:
        config = ServerConfig(fps=60, width=1280, height=720, max_sessions=sessions, sessions_per_address=sessions, idle_timeout=60, workers=workers, encoder_threads=ENCODER_THREADS, switch_interval_ms=SWITCH_INTERVAL_MS, late_start=LATE_START)
        app = create_app({"sample": load_asset(sample_avatar_path())}, config)
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
            url = str(server.make_url("")).rstrip("/")
            worker_pids = [w.process.pid for w in server.app[SERVER_KEY].workers] if workers > 1 else []
            viewers = [
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "splatcast.streaming.viewer", url, "--seconds", str(VIEWER_SECONDS), "--width", "1280", "--height", "720",
                    *([] if VIEWERS_DECODE else ["--no-decode"]), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                    preexec_fn=pin_viewer if VIEWER_CPUS else None,
                )
                for _ in range(sessions)
            ]
            connect_by = time.monotonic() + max(30.0, VIEWER_SECONDS)
            while time.monotonic() < connect_by:  # every viewer connected and streaming
                before_at, before = await scrape(http, url)
                sent = frames_per_session(before)
                if len(sent) == sessions and all(n > 30 for n in sent.values()):
                    break
                await asyncio.sleep(0.1)
            viewer_pids = [v.pid for v in viewers]
            cpu, viewer_cpu, cpu_at = server_cpu_seconds(worker_pids), cpu_seconds(viewer_pids), time.monotonic()
            await asyncio.sleep(WINDOW_SECONDS)
            after_at, after = await scrape(http, url)
            wall = after_at - before_at
            streaming_through = sum(v.returncode is None for v in viewers)  # none left before the window closed
            cpu_now, viewer_cpu_now, cpu_wall = server_cpu_seconds(worker_pids), cpu_seconds(viewer_pids), time.monotonic() - cpu_at
            cpu_use = (cpu_now - cpu) / cpu_wall
            viewer_cpu_use = (viewer_cpu_now - viewer_cpu) / cpu_wall
            now = frames_per_session(after)
            fps = [(now[key] - n) / wall for key, n in sent.items() if key in now]
            renders = total(after, "splatcast_render_seconds_count") - total(before, "splatcast_render_seconds_count")
            render_s = total(after, "splatcast_render_seconds_sum") - total(before, "splatcast_render_seconds_sum")
            outputs = [(await v.communicate())[0].decode().strip().splitlines() for v in viewers]
            reports = [json.loads(lines[-1]) for lines in outputs if lines]  # a viewer that failed printed nothing
            return {
                "sessions": sessions,
                "workers": workers,
                "encoder_threads": ENCODER_THREADS,
                "switch_interval_ms": SWITCH_INTERVAL_MS,
                "late_start": LATE_START,
                "connected": len(sent),
                "viewers_streaming_through_window": streaming_through,
                "server_fps_min": round(min(fps), 2) if fps else 0.0,
                "server_fps_median": round(statistics.median(fps), 2) if fps else 0.0,
                "viewers_reporting": len(reports),
                "viewer_fps_min": min((r["fps"] for r in reports), default=0.0),
                "viewer_fps_median": statistics.median([r["fps"] for r in reports] or [0.0]),
                "viewer_latency_ms_p50_median": statistics.median([r["latency_ms_p50"] for r in reports if r["latency_ms_p50"] is not None] or [None]),
                "server_pose_to_encoded_ms_p50_at_most": histogram_quantile(before, after, "splatcast_pose_to_encoded_seconds", 0.5),
                "server_pose_to_encoded_ms_p99_at_most": histogram_quantile(before, after, "splatcast_pose_to_encoded_seconds", 0.99),
                "encode_ms_p99_at_most": histogram_quantile(before, after, "splatcast_encode_seconds", 0.99),
                "render_ms_per_tick_mean": round(1e3 * render_s / renders, 3) if renders else None,
                "ticks_per_s": round(renders / wall, 1),
                "server_cpu_cores_busy": round(cpu_use, 2),
                "viewer_cpu_cores_busy": round(viewer_cpu_use, 2),
                "cpu_cores": os.cpu_count(),
                "server_cpus": usable_cpu_count(),
                "viewer_cpus": VIEWER_CPUS or "shared with the server",
                "viewers_decode": VIEWERS_DECODE,
            }

    report = benchmark.pedantic(lambda: asyncio.run(run()), rounds=1, iterations=1)
    benchmark.extra_info.update(report)
    assert report["connected"] == sessions, f"{report['connected']} of {sessions} sessions connected"
