"""How the host should wait for a frame: the call's latency against the CPU it takes (issue 3).

    python benchmarks/compare_waits_gpu.py OUT.json

For each benchmark case, rasterizers that differ only in ``spin_us`` (polling throughout, the
default sleep-then-poll, sleeping to the last moment) render in interleaved rounds, so that the
host's drift between runs (up to 0.19 ms a call, kernels/NOTES.md) falls on all of them alike.
Per variant: the median call (CUDA events around it, as the benchmark) and the median CPU time
of the calling thread per call. Then a cProfile of the default's calls: where the host's
Python time goes.
"""

import cProfile
import datetime
import io
import json
import os
import pstats
import statistics
import sys
import time

import torch

from splatcast.kernels.cuda_rasterizer import CudaRasterizer
from test_rasterizer_gpu import BACKGROUND, CASES, case_views, cloud_of

ROUNDS = 6
FRAMES_PER_ROUND = 20
VARIANTS = {"poll throughout": 1e9, "default": None, "sleep to the end": 0.0}


def timed_calls(call, frames: int) -> tuple[list[float], list[float]]:
    """Per call: CUDA-event milliseconds around it and the calling thread's CPU milliseconds."""
    elapsed, cpu = [], []
    for _ in range(frames):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        cpu_start = time.thread_time()
        start.record()
        call()
        end.record()
        cpu.append((time.thread_time() - cpu_start) * 1e3)
        end.synchronize()
        elapsed.append(start.elapsed_time(end))
    return elapsed, cpu


def compare(case: str) -> dict:
    n, setup = CASES[case]
    cloud, (views, _) = cloud_of(n), case_views(setup)
    calls = {}
    for name, spin_us in VARIANTS.items():
        rasterizer = CudaRasterizer(n) if spin_us is None else CudaRasterizer(n, spin_us=spin_us)
        calls[name] = lambda r=rasterizer: r.render(cloud, views, BACKGROUND)
        timed_calls(calls[name], 10)  # capture, then settle the frame-time and wake-up estimates
    elapsed = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            e, c = timed_calls(call, FRAMES_PER_ROUND)
            elapsed[name] += e
            cpu[name] += c
    result = {"case": case, "frames": ROUNDS * FRAMES_PER_ROUND}
    for name in calls:
        result[name] = {"call_ms": round(statistics.median(elapsed[name]), 4), "cpu_ms": round(statistics.median(cpu[name]), 4)}
    profiler = cProfile.Profile()
    profiler.enable()
    timed_calls(calls["default"], 100)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
    result["profile"] = text.getvalue()
    return result


def main(path: str) -> None:
    results = []
    for case in CASES:
        results.append(compare(case))
        torch.cuda.empty_cache()
        print(case, {name: results[-1][name] for name in VARIANTS}, flush=True)
    with open(path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                   "commit": os.environ.get("SPLATCAST_COMMIT", ""), "torch": torch.__version__, "rounds": ROUNDS, "frames_per_round": FRAMES_PER_ROUND, "cases": results}, f, indent=1)
    print(results[0]["profile"])


if __name__ == "__main__":
    main(sys.argv[1])
