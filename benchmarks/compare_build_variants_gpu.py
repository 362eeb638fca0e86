"""Builds of the kernels, A/B in one process (issue 3, kernels/NOTES.md v20-v22).

    python benchmarks/compare_build_variants_gpu.py OUT.json [NAME=VALUE[,NAME=VALUE...] ...]

Builds the kernels once per variant, a set of compile-time switches (``BLEND_MIN_BLOCKS``: the
blending kernel's ``__launch_bounds__`` minimum of blocks an SM, 1 leaving ptxas unbounded; the
switch of an experiment while it is measured), beside the default build (so that a later
``_load_extension`` finds it), in parallel; then times the rgb frame's graph replay of every
benchmark case with each build, interleaved over ROUNDS rounds (the GPU's share of a call, which
repeats within 1% between runs where the host's share does not), and records each build's GPU
time per kernel and the largest difference of its frames from the default's.
"""

import json
import re
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

import provenance
from splatcast.kernels import cuda_rasterizer
from profile_rasterizer_gpu import kernels_us, median_ms
from test_rasterizer_gpu import BACKGROUND, CASES, case_views, cloud_of

ROUNDS = 3


def build(variant: str | None):
    """The default build (``None``) or one with the variant's ``NAME=VALUE`` defines."""
    if variant is None:
        return cuda_rasterizer._load_extension()
    csrc = Path(cuda_rasterizer.__file__).with_name("csrc")
    defines = [f"-D{define}" for define in variant.split(",")]
    return load(
        name="splatcast_rasterizer_" + re.sub(r"\W", "_", variant),
        sources=[str(csrc / name) for name in cuda_rasterizer._SOURCES],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", "--use_fast_math", "-lineinfo", *defines],
    )


def replay(extension, case: str) -> tuple[float, torch.Tensor, dict]:
    """The median replay (ms), the frame's image and the replay's GPU time per kernel (us)."""
    n, setup = CASES[case]
    views, _ = case_views(setup)
    cuda_rasterizer._extension = extension  # what the next CudaRasterizer binds
    rasterizer = cuda_rasterizer.CudaRasterizer(n)
    for _ in range(3):  # the first frame fits the pair slots, the next captures
        image = rasterizer.render(cloud_of(n), views, BACKGROUND)
    (plan,) = rasterizer._plans.values()
    return median_ms(lambda: rasterizer._replay(plan)), image, kernels_us(lambda: rasterizer._replay(plan))


def main(path: str, variants: list[str]) -> None:
    labels = ["default", *variants]
    with ThreadPoolExecutor(len(labels)) as pool:
        builds = dict(zip(labels, pool.map(build, [None, *variants])))
    default = cuda_rasterizer._extension
    times = {case: {label: [] for label in labels} for case in CASES}
    # Largest difference of any pixel level from the default build's frame: the variants change
    # how the work is scheduled, not the arithmetic, so 0 is expected.
    differences, kernels = {case: {} for case in CASES}, {case: {} for case in CASES}
    for _ in range(ROUNDS):
        for case in CASES:
            reference = None
            for label, extension in builds.items():
                ms, image, kernels[case][label] = replay(extension, case)
                times[case][label].append(ms)
                reference = image if reference is None else reference
                differences[case][label] = int((image.int() - reference.int()).abs().max())
                del image
                torch.cuda.empty_cache()
    cuda_rasterizer._extension = default
    medians = {case: {label: round(statistics.median(t), 4) for label, t in by.items()} for case, by in times.items()}
    commit = provenance.commit()
    result = {
        "issue": 3,
        "device": torch.cuda.get_device_name(),
        "date": datetime.now(timezone.utc).isoformat(),
        "commit": commit,
        "method": f"rgb graph replay, median of 40 frames, median over {ROUNDS} interleaved rounds; "
        f"'default' is the build as shipped, the others with the defines they are named by",
        "replay_ms": medians,
        "max_level_difference_vs_default": differences,
        "kernels_us_last_round": kernels,
        "rounds_ms": times,
    }
    Path(path).write_text(json.dumps(result, indent=1))
    print("| case | " + " | ".join(labels) + " |")
    for case, by in medians.items():
        print(f"| {case} | " + " | ".join(f"{by[label]:.3f} (diff {differences[case][label]})" for label in labels) + " |")
    for case, by in kernels.items():
        for label, us in by.items():
            print(case, label, us)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["BLEND_MIN_BLOCKS=1"])
