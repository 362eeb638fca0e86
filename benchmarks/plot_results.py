"""Plot a results file from benchmarks/results to a PNG beside it: a session sweep
(test_sessions_gpu.py's pytest-benchmark JSON), a latency run (test_latency_gpu.py's) or a
rasterizer run (summarize_rasterizer.py's).

    python benchmarks/plot_results.py benchmarks/results/<file>.json
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from targets import IN_PROCESS_1080P_MS, LOOPBACK_720P_P50_MS, SESSIONS_MIN_FPS, timed_quantile  # noqa: E402

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
    fps_ax.axhline(SESSIONS_MIN_FPS, color="grey", lw=0.8)
    fps_ax.set(xscale="log", xlabel="concurrent 720p60 sessions", ylabel="frames per second", title="Delivered frame rate")
    fps_ax.set_xticks(n, [str(v) for v in n])
    fps_ax.legend(fontsize="small")
    ms_ax.set(xscale="log", yscale="log", xlabel="concurrent 720p60 sessions", ylabel="ms", title="Latency and GPU time")
    ms_ax.set_xticks(n, [str(v) for v in n])
    ms_ax.legend(fontsize="small")
    commit = data["machine_info"].get("splatcast_commit") or data["commit_info"].get("id", "")
    return fig, f"{data['machine_info'].get('device', '')}  {commit[:8]}"


IN_PROCESS_STAGES = ("render", "convert", "encode")


def _case(name: str) -> str:
    return name[name.index("[") + 1 : name.rindex("]")]


def plot_latency(data: dict) -> tuple[plt.Figure, str]:
    """In process: each case's p50 by stage, its p95 and p99 over the timed rounds; over loopback WebRTC: p50, p95 and
    p99 for the viewer's release at a frame's last packet beside aiortc's one-frame hold."""
    in_process_runs = {_case(b["name"]): b for b in data["benchmarks"] if b["name"].startswith("test_in_process")}
    in_process = {case: b["extra_info"] for case, b in in_process_runs.items()}
    loopback = {_case(b["name"]): b["extra_info"] for b in data["benchmarks"] if b["name"].startswith("test_loopback")}
    fig, (process_ax, loop_ax) = plt.subplots(1, 2, figsize=(12, 5.5))

    cases = list(in_process)
    bottoms = [0.0] * len(cases)
    for stage in IN_PROCESS_STAGES:
        values = [in_process[c][f"{stage}_ms"]["p50"] for c in cases]
        process_ax.bar(range(len(cases)), values, 0.6, bottom=bottoms, label=f"{stage} (p50)")
        bottoms = [b + v for b, v in zip(bottoms, values)]
    rest = [max(0.0, in_process[c]["total_ms"]["p50"] - b) for c, b in zip(cases, bottoms)]  # percentiles do not add: a rough share
    process_ax.bar(range(len(cases)), rest, 0.6, bottom=bottoms, label="the rest of the p50 (handoffs, copy)", color="lightgrey")
    for q, marker in ((0.95, "v"), (0.99, "^")):
        totals = [timed_quantile(in_process_runs[c], q) for c in cases]
        process_ax.plot(range(len(cases)), totals, marker, color="black", ls="none", label=f"total p{round(100 * q)}")
    for q, target in IN_PROCESS_1080P_MS.items():
        if "1080p-mono" in cases:
            x = cases.index("1080p-mono")
            process_ax.hlines(target, x - 0.4, x + 0.4, colors="black", linestyles="--" if q == "p50" else ":", label=f"target {q} (1080p mono)")
    process_ax.set_xticks(range(len(cases)), cases)
    process_ax.set(ylabel="ms", title="In process: pose received -> encoded packet")
    process_ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)

    views = sorted({c.rsplit("-", 1)[0] for c in loopback}, key=list(c.rsplit("-", 1)[0] for c in loopback).index)
    releases = {"marker": "released at its last packet", "aiortc": "aiortc's hold (one frame later)"}
    width = 0.8 / len(releases)
    for i, (release, label) in enumerate(releases.items()):
        xs = [x + (i - 0.5) * width for x in range(len(views))]
        rows = [loopback.get(f"{v}-{release}") for v in views]
        loop_ax.bar(xs, [r["latency_ms_p50"] if r else 0 for r in rows], width, label=f"{label}, p50")
        for q, marker in (("p95", "v"), ("p99", "^")):
            loop_ax.plot(xs, [r[f"latency_ms_{q}"] if r else float("nan") for r in rows], marker, color="black", ls="none", label=f"{q}" if i == 0 else None)
    if "720p-mono" in views:
        x = views.index("720p-mono")
        loop_ax.hlines(LOOPBACK_720P_P50_MS, x - 0.45, x + 0.45, colors="black", linestyles="--", label="target p50 (720p60 mono)")
    loop_ax.set_xticks(range(len(views)), views)
    loop_ax.set(ylabel="ms", title="Loopback WebRTC, 60 fps: pose sent -> decoded")
    loop_ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    commit = data["machine_info"].get("splatcast_commit") or data["commit_info"].get("id", "")
    return fig, f"{data['machine_info'].get('device', '')}  {commit[:8]}  {data['datetime'][:10]}"


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
    if "cases" in data:
        plot = plot_rasterizer
    elif any(b["name"].startswith("test_loopback") for b in data["benchmarks"]):
        plot = plot_latency
    else:
        plot = plot_sessions
    fig, title = plot(data)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1])
