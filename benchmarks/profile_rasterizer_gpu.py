"""Where a frame of the CUDA rasterizer spends its time, for kernels/NOTES.md (issue 3).

    python benchmarks/profile_rasterizer_gpu.py OUT.json

For each benchmark case: the median of a whole ``render_i420`` and ``render`` call (CUDA events,
as the benchmark), of their graph replays alone (the GPU's share, with the launch), the host's
time in a ``render_i420`` call split into Python, graph launch and the wait for the frame, the
GPU time of each kernel in the rgb replay (torch.profiler), and of each stage's launch when run eagerly between CUDA events (the graph runs the
same launches without the gaps; eager times of small launches are mostly launch latency); the
blending of the heaviest tile alone (the floor of the blending launch); the replay with 31-bit
depth keys, against the plan's own (24-bit where the views' depths fit); and the work: entries,
entries with pairs, pairs, and tile list lengths.
"""

import dataclasses
import json
import math
import statistics
import sys
import time
from collections import defaultdict

import torch

from splatcast.kernels.cuda_rasterizer import CudaRasterizer
from test_rasterizer_gpu import BACKGROUND, CASES, case_views, cloud_of

FRAMES = 40


class StageTimer:
    """The extension module with CUDA events around each kernel-launching call."""

    def __init__(self, extension) -> None:
        self.extension = extension
        self.events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def __getattr__(self, name: str):
        function = getattr(self.extension, name)
        if name in ("sort_temp_bytes", "FrameEvents", "VIEW_FLOATS"):  # no launch
            return function

        def timed(*args):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = function(*args)
            end.record()
            self.events.append((name, start, end))
            return result

        return timed


def median_ms(call) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(FRAMES):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return round(statistics.median(times), 4)


def kernels_us(call) -> dict:
    """GPU time of each kernel ``call`` launches (graph nodes included: CUPTI reports them), as
    torch.profiler records it: microseconds a call, the mean of ten, by kernel name up to its
    template arguments."""
    call()
    torch.cuda.synchronize()
    calls = 10
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    totals = defaultdict(float)
    for average in profiler.key_averages():
        if average.device_type == torch.autograd.DeviceType.CUDA:
            name = average.key.replace("(anonymous namespace)::", "").removeprefix("void ")
            totals[name.split("<")[0].split("(")[0]] += average.device_time_total / calls
    return {name: round(us, 2) for name, us in sorted(totals.items(), key=lambda item: -item[1])}


def host_split(rasterizer: CudaRasterizer, call) -> dict:
    """Host time of a call (perf_counter medians, ms): launching the frame (``_run``: the graph
    replay), waiting for it (``_finish``), and the rest (Python)."""
    times = defaultdict(list)

    def timed(name, function):
        def wrapper(*args):
            start = time.perf_counter()
            result = function(*args)
            times[name].append(time.perf_counter() - start)
            return result

        return wrapper

    run, finish = rasterizer._run, rasterizer._finish
    rasterizer._run, rasterizer._finish = timed("launch", run), timed("wait", finish)
    for _ in range(FRAMES):
        start = time.perf_counter()
        call()
        times["call"].append(time.perf_counter() - start)
    rasterizer._run, rasterizer._finish = run, finish
    split = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    split["python"] = split["call"] - split["launch"] - split["wait"]
    return {name: round(value, 4) for name, value in split.items()}


def profile(case: str, storage: torch.dtype) -> dict:
    n, setup = CASES[case]
    cloud, (views, per_frame) = cloud_of(n), case_views(setup)
    rasterizer = CudaRasterizer(n, storage=storage)
    call_ms = median_ms(lambda: rasterizer.render_i420(cloud, views, BACKGROUND, per_frame))
    rgb_call_ms = median_ms(lambda: rasterizer.render(cloud, views, BACKGROUND))
    plan, rgb_plan = rasterizer._plans.values()
    replay_ms = median_ms(lambda: rasterizer._replay(plan))
    rgb_replay_ms = median_ms(lambda: rasterizer._replay(rgb_plan))

    host = host_split(rasterizer, lambda: rasterizer.render_i420(cloud, views, BACKGROUND, per_frame))
    rgb_replay_kernels = kernels_us(lambda: rasterizer._replay(rgb_plan))

    # A/B in the same process: the frame with 31-bit depth keys (a cloud with no bounds), against
    # the plan's own keys (24 bits where its views' depths fit them).
    unbounded = dataclasses.replace(rasterizer._pack(cloud), half_size=(math.inf,) * 3)
    for _ in range(2):  # the second call captures the graph with the fitted pair slots
        rasterizer.render_i420(unbounded, views, BACKGROUND, per_frame)
    full_keys_plan = next(reversed(rasterizer._plans.values()))
    full_keys_replay_ms = median_ms(lambda: rasterizer._replay(full_keys_plan))

    entries = len(views) * n
    lengths = (plan.ranges[:, 1] - plan.ranges[:, 0]).float()
    busy = lengths[lengths > 0]
    result = {
        "case": case, "storage": str(storage), "call_ms": call_ms, "replay_ms": replay_ms,
        "rgb_call_ms": rgb_call_ms, "rgb_replay_ms": rgb_replay_ms, "rgb_replay_kernels_us": rgb_replay_kernels, "host_ms": host,
        "depth_key_bits": plan.depth_key_bits, "replay_31_bit_depth_keys_ms": full_keys_replay_ms,
        "entries": entries, "entries_with_pairs": int((rasterizer._tile_counts[:entries] > 0).sum()),
        "pairs": int(rasterizer._ends[entries - 1]), "pair_slots": plan.pair_slots,
        "busy_tiles": int(busy.numel()), "mean_list": round(float(busy.mean()), 1), "max_list": int(busy.max()),
    }

    eager = CudaRasterizer(n, storage=storage, graphs=False)
    eager.render_i420(cloud, views, BACKGROUND, per_frame)
    timer = StageTimer(eager._ext)
    eager._ext = timer
    stages = defaultdict(list)
    for _ in range(FRAMES // 2):
        timer.events.clear()
        eager.render_i420(cloud, views, BACKGROUND, per_frame)
        torch.cuda.synchronize()
        for name, start, end in timer.events:
            stages[name].append(start.elapsed_time(end))
    result["stages_ms"] = {name: round(statistics.median(times), 4) for name, times in stages.items()}

    (plan,) = eager._plans.values()
    lengths = plan.ranges[:, 1] - plan.ranges[:, 0]
    alone = torch.zeros_like(plan.ranges)
    alone[lengths.argmax()] = plan.ranges[lengths.argmax()]
    result["heaviest_tile_blend_ms"] = median_ms(lambda: timer.extension.blend(
        alone, None, eager._pair_values_sorted, eager._splats, plan.num_views * plan.num_gaussians, plan.background, plan.num_views, plan.width, plan.height,
        plan.image_slot, None, False, True))
    return result


def main(path: str) -> None:
    results = []
    for case, storage in [*((case, torch.float16) for case in CASES), ("100k-1080p", torch.float32)]:
        results.append(profile(case, storage))
        torch.cuda.empty_cache()
    with open(path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "profiles": results}, f, indent=1)
    for r in results:
        stages = " ".join(f"{k}={v:.3f}" for k, v in r["stages_ms"].items())
        print(f"{r['case']:20} {r['storage'][6:]:8} call={r['call_ms']:.3f} replay={r['replay_ms']:.3f} "
              f"({r['depth_key_bits']}-bit depth keys; 31-bit: {r['replay_31_bit_depth_keys_ms']:.3f}) "
              f"rgb call={r['rgb_call_ms']:.3f} replay={r['rgb_replay_ms']:.3f} "
              f"pairs={r['pairs']} vis={r['entries_with_pairs']}/{r['entries']} list={r['mean_list']}/{r['max_list']} "
              f"heaviest={r['heaviest_tile_blend_ms']:.3f} host={r['host_ms']} | {stages}\n    rgb replay's kernels, us: {r['rgb_replay_kernels_us']}")


if __name__ == "__main__":
    main(sys.argv[1])
