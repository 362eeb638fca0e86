"""Blending at several register budgets, A/B in one process (issue 3, kernels/NOTES.md v20).

    python benchmarks/compare_blend_occupancy_gpu.py OUT.json [MIN_BLOCKS ...]

Builds the kernels once per ``BLEND_MIN_BLOCKS`` (the blending kernel's ``__launch_bounds__``
minimum of blocks an SM; 1 leaves ptxas unbounded, and the default build is always one of them,
so a later ``_load_extension`` finds it built), in parallel, then times the rgb frame's graph
replay of every benchmark case with each build, interleaved over ROUNDS rounds: the GPU's share
of a call, which repeats within 1% between runs where the host's share does not.
"""

import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

from splatcast.kernels import cuda_rasterizer
from profile_rasterizer_gpu import median_ms
from test_rasterizer_gpu import BACKGROUND, CASES, case_views, cloud_of

ROUNDS = 3


def build(min_blocks: int | None):
    """The default build (``None``) or one with ``-DBLEND_MIN_BLOCKS=min_blocks``."""
    if min_blocks is None:
        return cuda_rasterizer._load_extension()
    csrc = Path(cuda_rasterizer.__file__).with_name("csrc")
    return load(
        name=f"splatcast_rasterizer_blend_blocks_{min_blocks}",
        sources=[str(csrc / name) for name in cuda_rasterizer._SOURCES],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", "--use_fast_math", "-lineinfo", f"-DBLEND_MIN_BLOCKS={min_blocks}"],
    )


def replay_ms(extension, case: str) -> float:
    n, setup = CASES[case]
    views, _ = case_views(setup)
    cuda_rasterizer._extension = extension  # what the next CudaRasterizer binds
    rasterizer = cuda_rasterizer.CudaRasterizer(n)
    for _ in range(3):  # the first frame fits the pair slots, the next captures
        rasterizer.render(cloud_of(n), views, BACKGROUND)
    (plan,) = rasterizer._plans.values()
    return median_ms(lambda: rasterizer._replay(plan))


def main(path: str, variants: list[int]) -> None:
    labels = ["default", *map(str, variants)]
    with ThreadPoolExecutor(len(labels)) as pool:
        builds = dict(zip(labels, pool.map(build, [None, *variants])))
    default = cuda_rasterizer._extension
    times = {case: {label: [] for label in labels} for case in CASES}
    for _ in range(ROUNDS):
        for case in CASES:
            for label, extension in builds.items():
                times[case][label].append(replay_ms(extension, case))
                torch.cuda.empty_cache()
    cuda_rasterizer._extension = default
    medians = {case: {label: round(statistics.median(t), 4) for label, t in by.items()} for case, by in times.items()}
    commit = os.environ.get("SPLATCAST_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "issue": 3,
        "device": torch.cuda.get_device_name(),
        "date": datetime.now(timezone.utc).isoformat(),
        "commit": commit,
        "method": f"rgb graph replay, median of 40 frames, median over {ROUNDS} interleaved rounds; "
        f"'default' is the build as shipped, the others -DBLEND_MIN_BLOCKS=N (1: unbounded registers)",
        "replay_ms": medians,
        "rounds_ms": times,
    }
    Path(path).write_text(json.dumps(result, indent=1))
    print("| case | " + " | ".join(labels) + " |")
    for case, by in medians.items():
        print(f"| {case} | " + " | ".join(f"{by[label]:.3f}" for label in labels) + " |")


if __name__ == "__main__":
    main(sys.argv[1], [int(v) for v in sys.argv[2:]] or [1, 20])
