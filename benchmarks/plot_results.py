"""Plot a results file from benchmarks/results to a PNG beside it: a session sweep
(test_sessions_gpu.py's pytest-benchmark JSON) or a rasterizer run (summarize_rasterizer.py's).

    python benchmarks/plot_results.py benchmarks/results/<file>.json
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

STAGES = {
    "preprocess": ("preprocess_kernel",),
    "sorts and scans (cub)": ("cub::",),
    "pair emission": ("emit_pairs_kernel",),
    "tile ranges and loads": ("tile_ranges_kernel", "tile_loads_kernel"),
    "blending": ("blend_kernel",),
}
"""Each stage's kernels by a piece of their profiled name; the rest (memsets, copies) is "other"."""


def stage_of(kernel: str) -> str:
    return next((stage for stage, marks in STAGES.items() if any(mark in kernel for mark in marks)), "other")


def stage_times_ms(kernels_us: dict[str, float]) -> dict[str, float]:
    times = dict.fromkeys([*STAGES, "other"], 0.0)
    for kernel, us in kernels_us.items():
        times[stage_of(kernel)] += us / 1e3
    return times


def plot_sessions(data: dict) -> tuple[plt.Figure, str]:
    """Delivered fps, latency and GPU time per tick against the number of sessions."""
    rows = [b["extra_info"] for b in data["benchmarks"] if "sessions" in b["extra_info"]]
    fig, (fps_ax, ms_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for workers in sorted({r.get("workers", 1) for r in rows}):
        layout = sorted((r for r in rows if r.get("workers", 1) == workers), key=lambda r: r["sessions"])
        n = [r["sessions"] for r in layout]
        tag = "1 process" if workers == 1 else f"{workers} workers"
        arrived = "decoded" if layout[0].get("viewers_decode", True) else "received"  # runs before the flag decoded
        fps_ax.plot(n, [r["server_fps_median"] for r in layout], "o-", label=f"{tag}: server, median session")
        fps_ax.plot(n, [r["server_fps_min"] for r in layout], "o--", label=f"{tag}: server, slowest session")
        fps_ax.plot(n, [r["viewer_fps_median"] for r in layout], "s:", label=f"{tag}: viewers {arrived}, median")
        ms_ax.plot(n, [r["server_pose_to_encoded_ms_p99_at_most"] for r in layout], "o-", label=f"{tag}: server pose->encoded p99 (bucket edge)")
        ms_ax.plot(n, [r["render_ms_per_tick_mean"] for r in layout], "o--", label=f"{tag}: render per tick, mean")
        ms_ax.plot(n, [r["viewer_latency_ms_p50_median"] for r in layout], "s:", label=f"{tag}: viewer pose->{arrived} p50")
    n = sorted({r["sessions"] for r in rows})
    fps_ax.axhline(58, color="grey", lw=0.8)
    fps_ax.set(xscale="log", xlabel="concurrent 720p60 sessions", ylabel="frames per second", title="Delivered frame rate")
    fps_ax.set_xticks(n, [str(v) for v in n])
    fps_ax.legend(fontsize="small")
    ms_ax.set(xscale="log", yscale="log", xlabel="concurrent 720p60 sessions", ylabel="ms", title="Latency and GPU time")
    ms_ax.set_xticks(n, [str(v) for v in n])
    ms_ax.legend(fontsize="small")
    commit = data["machine_info"].get("splatcast_commit") or data["commit_info"].get("id", "")
    return fig, f"{data['machine_info'].get('device', '')}  {commit[:8]}"


def plot_rasterizer(data: dict) -> tuple[plt.Figure, str]:
    """Each case's call beside gsplat's and the target, and the GPU kernels of a frame by stage."""
    cases = list(data["cases"])
    fig, (call_ax, stage_ax) = plt.subplots(1, 2, figsize=(12, 4.5))

    bars = {
        "splatcast, 8-bit RGB on the GPU": [data["cases"][c]["splatcast_fp16"]["rgb_median_ms"] for c in cases],
        "splatcast, I420 in host memory": [data["cases"][c]["splatcast_fp16"]["i420_median_ms"] for c in cases],
        "gsplat 1.5.3, float RGB on the GPU": [data["cases"][c]["gsplat 1.5.3"]["rgb_median_ms"] for c in cases],
    }
    width = 0.8 / len(bars)
    for i, (label, values) in enumerate(bars.items()):
        call_ax.bar([x + i * width for x in range(len(cases))], values, width, label=label)
    for x, case in enumerate(cases):
        target = data["cases"][case]["target_ms"]
        call_ax.hlines(target, x - width / 2, x + (len(bars) - 0.5) * width, colors="black", linestyles="--")
        speedup = data["cases"][case]["speedup_vs_gsplat_fp16"]["rgb"]
        call_ax.annotate(f"{speedup:.1f}x", (x + 2 * width, bars["gsplat 1.5.3, float RGB on the GPU"][x]), ha="center", va="bottom", fontsize="small")
    call_ax.plot([], [], "k--", label="target (RGB call)")
    call_ax.set_xticks([x + width for x in range(len(cases))], cases)
    call_ax.set(yscale="log", ylabel="ms per call (median)", title="Whole call, FP16 storage (label: gsplat / splatcast RGB)")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    call_ax.yaxis.set_major_formatter(plain)
    call_ax.yaxis.set_minor_formatter(plain)
    call_ax.legend(fontsize="small")

    profiles = {p["case"]: p for p in data["profile"] if p["storage"] == "torch.float16"}
    bottoms = [0.0] * len(cases)
    for stage in [*STAGES, "other"]:
        values = [stage_times_ms(profiles[c]["rgb_replay_kernels_us"])[stage] for c in cases]
        stage_ax.bar(range(len(cases)), values, 0.6, bottom=bottoms, label=stage)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    stage_ax.set_xticks(range(len(cases)), cases)
    stage_ax.set(ylabel="ms of GPU kernels per frame", title="GPU share of an RGB frame (graph replay, profiled)")
    stage_ax.legend(fontsize="small")

    return fig, f"{data['machine']}  {data['commit']}  {data['date'][:10]}"


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    fig, title = (plot_rasterizer if "cases" in data else plot_sessions)(data)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1])
