"""The issues' performance targets against the committed results: the README's "Targets at a
glance" table and its chart, both made from the files in benchmarks/results, never copied by hand.

    python benchmarks/targets.py                    # the table, as Markdown
    python benchmarks/targets.py --readme README.md --plot benchmarks/results/targets.png

Each target lists the runs its README section stands on, the latest code each GPU ran (for
the rasterizer, the H200 last ran v18 and v19 of the kernels and the H100 v20 to v22; see
kernels/NOTES.md); runs of older code are discussed in the README's sections. After a GPU run, add its file to the sources of the targets it measured
and run the second command; ``tests/test_targets.py`` fails while the README's table differs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
README_BEGIN = "<!-- targets: made by benchmarks/targets.py -->"
README_END = "<!-- targets: end -->"
DEVICES = ("H100", "H200")
IN_PROCESS_1080P_MS = {"p50": 4.0, "p99": 8.0}
"""Issue 6's targets the plots draw too (``plot_results.py``): pose -> encoded in process, 1080p mono ..."""
LOOPBACK_720P_P50_MS = 25.0
"""... pose sent -> decoded over loopback WebRTC, 720p60 mono ..."""
SESSIONS_MIN_FPS = 58.0
"""... and the frame rate each of 32 sessions delivers."""


@dataclass(frozen=True)
class Source:
    """A results file and how to read a target's figure from it: one value a run, and a file may
    hold several runs (a repeat in the same device call)."""

    file: str
    read: Callable[[dict], list[float]]


@dataclass(frozen=True)
class Run:
    device: str
    commit: str
    value: float
    file: str


@dataclass(frozen=True)
class Target:
    issue: int
    name: str
    limit: float
    unit: str
    """As written after the number: " ms", "x"."""
    sources: tuple[Source, ...]
    at_least: bool = False
    """A floor (frame rates, speed-ups) rather than a ceiling."""
    note: str = ""

    @property
    def bound(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g}{self.unit}"

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def share_of_limit(self, value: float) -> float:
        """Measured against allowed, oriented so that 1 or less always meets the target."""
        return self.limit / value if self.at_least else value / self.limit

    def runs(self, results: Path = RESULTS) -> list[Run]:
        found = []
        for source in self.sources:
            data = json.loads((results / source.file).read_text())
            device, commit = device_and_commit(data)
            found += [Run(device, commit, value, source.file) for value in source.read(data)]
        return found


def provenance_of(data: dict) -> dict[str, str | None]:
    """Device, date and commit of any of the three result schemas the GPU and CPU scripts write
    (None for a field the file lacks)."""
    if "benchmarks" in data:  # pytest-benchmark: benchmarks/conftest.py adds the device and commit
        info = data["machine_info"]
        return {"device": info.get("device"), "date": data.get("datetime"), "commit": info.get("splatcast_commit") or data["commit_info"].get("id")}
    # summarize_rasterizer.py names the GPU "machine"; test_engines_gpu.py and the CPU scripts "device"
    return {"device": data.get("device") or data.get("machine"), "date": data.get("date"), "commit": data.get("commit")}


def device_and_commit(data: dict) -> tuple[str, str]:
    """The short GPU name (H100, H200) and the commit of a results file."""
    found = provenance_of(data)
    return next((d for d in DEVICES if d in found["device"]), found["device"]), found["commit"][:7]


def rasterizer_call(case: str) -> Callable[[dict], list[float]]:
    return lambda data: [data["cases"][case]["splatcast_fp16"]["rgb_median_ms"]]


def slowest_speedup(data: dict) -> list[float]:
    return [min(case["speedup_vs_gsplat_fp16"]["rgb"] for case in data["cases"].values())]


def engine_median(result: str) -> Callable[[dict], list[float]]:
    return lambda data: [data["results"][result]["median_ms"]]


def benchmark_median(name: str) -> Callable[[dict], list[float]]:
    return lambda data: [b["stats"]["median"] for b in data["benchmarks"] if b["name"] == name]


def timed_quantile(benchmark: dict, quantile: float) -> float:
    """A pytest-benchmark entry's quantile (ms) over its timed rounds, without the warm-up: in
    results written before 2026-12-08 the stage percentiles of test_latency_gpu.py count it too."""
    rounds = sorted(benchmark["stats"]["data"])
    return 1e3 * rounds[min(len(rounds) - 1, int(quantile * len(rounds)))]


def in_process(case: str, quantile: float) -> Callable[[dict], list[float]]:
    name = f"test_in_process_pose_to_encoded[{case}]"
    return lambda data: [timed_quantile(b, quantile) for b in data["benchmarks"] if b["name"] == name]


def loopback_p50(case: str) -> Callable[[dict], list[float]]:
    name = f"test_loopback_pose_to_decoded_60fps[{case}]"
    return lambda data: [b["extra_info"]["latency_ms_p50"] for b in data["benchmarks"] if b["name"] == name]


def sessions_32(figure: str) -> Callable[[dict], list[float]]:
    """32-session runs with 8 or 12 workers and the default late start (0)."""

    def read(data: dict) -> list[float]:
        runs = [b["extra_info"] for b in data["benchmarks"]]
        return [r[figure] for r in runs if r["sessions"] == 32 and r["workers"] in (8, 12) and not r.get("late_start")]

    return read


def sources(files: tuple[str, ...], read: Callable[[dict], list[float]]) -> tuple[Source, ...]:
    return tuple(Source(f, read) for f in files)


RASTERIZER_RUNS = (
    "rasterizer-h100-cb03c78.json", "rasterizer-h100-ce1c61d.json",
    "rasterizer-h200.json", "rasterizer-h200-repeat-5ce6065.json", "rasterizer-h200-depth-keys-62b4b78.json",
)
SESSION_RUNS = (
    "sessions-h100-32-sessions-12-workers-ce1c61d.json", "sessions-h100-32-sessions-12-workers-repeat-6916761.json",
    "sessions-h100-32-12w-97bd199-run1.json", "sessions-h100-32-12w-97bd199-run2.json",
    "sessions-h200-no-decode-f25a40b.json", "sessions-h200-32-sessions-12-16-workers-62b4b78.json",
)
LATENCY_RUNS = ("latency-h100-97bd199.json", "latency-h200-inprocess-f9e0699.json", "latency-h200-inprocess-a829ccc.json", "latency-h200-f25a40b.json")

TARGETS = (
    Target(
        3, "rasterizer, 100k @ 1080p", 0.30, " ms", sources(RASTERIZER_RUNS, rasterizer_call("100k-1080p")),
        note="the rasterizer's H200 runs are of v18 and v19 of the kernels, its H100 runs of v20 to v22 (kernels/NOTES.md)",
    ),
    Target(3, "rasterizer, 300k Quest 3 stereo pair", 0.60, " ms", sources(RASTERIZER_RUNS, rasterizer_call("300k-quest3-stereo"))),
    Target(3, "rasterizer, 1M @ 1080p", 1.2, " ms", sources(RASTERIZER_RUNS, rasterizer_call("1M-1080p"))),
    Target(3, "rasterizer, 16 x 720p of 300k", 2.0, " ms", sources(RASTERIZER_RUNS, rasterizer_call("300k-16x720p"))),
    Target(3, "rasterizer against gsplat 1.5.3, its slowest case", 4.0, "x", sources(RASTERIZER_RUNS, slowest_speedup), at_least=True),
    Target(
        5, "UNet denoising step, 21 x 576^2, CFG 2", 80.0, " ms",
        (Source("engines-h200-compile-cache.json", engine_median("synth_step/torch-fp16-compile-cudagraph")),),
        note="about 69 TFLOP a step: 80 ms needs about 860 TFLOP/s, beyond FP16 on these GPUs; the H100 ran only the engine before torch.compile, 315 ms (Optimized engines)",
    ),
    Target(5, "reconstruction transformer", 30.0, " ms", (Source("engines-h100.json", engine_median("lrt/torch-fp16-cudagraph")),)),
    Target(
        5, "photo -> Gaussians, 25 steps", 2.2, " s",
        (Source("recon-h200-torch-engine-3ea5e35.json", benchmark_median("test_end_to_end_torch_engine")),),
        note="most of it the 25 UNet steps (Reconstruction)",
    ),
    Target(6, "in process, 1080p pose -> encoded, p50", IN_PROCESS_1080P_MS["p50"], " ms", sources(LATENCY_RUNS, in_process("1080p-mono", 0.50))),
    Target(
        6, "in process, 1080p pose -> encoded, p99", IN_PROCESS_1080P_MS["p99"], " ms", sources(LATENCY_RUNS, in_process("1080p-mono", 0.99)),
        note="over on the H100 host in two stretches of its run that were not costlier frames; most likely something else took CPUs from an encoder with a slice thread on each (Latency and scale)",
    ),
    Target(
        6, "loopback 720p60 pose -> decoded, p50", LOOPBACK_720P_P50_MS, " ms",
        (Source("latency-h100-97bd199.json", loopback_p50("720p-mono-marker")),),
        note="the viewer releases each frame at its last packet; aiortc's receiver holds it one frame longer (Latency and scale)",
    ),
    Target(
        6, "32 sessions at 720p60, slowest viewer's fps", SESSIONS_MIN_FPS, " fps", sources(SESSION_RUNS, sessions_32("viewer_fps_min")),
        at_least=True, note="8 or 12 workers, viewers on the same 16-core host receiving without decoding (Latency and scale)",
    ),
    Target(
        6, "32 sessions at 720p60, server pose -> encoded p99", 20.0, " ms",
        sources(SESSION_RUNS, sessions_32("server_pose_to_encoded_ms_p99_at_most")),
        note="the upper edge of the p99's histogram bucket",
    ),
)


def _figure(run: Run) -> str:
    return f"{run.value:.4g} ({run.commit})"


def _verdict(target: Target, runs: list[Run]) -> str:
    met = [run for run in runs if target.met(run.value)]
    if len(met) == len(runs):
        return "yes"
    if not met:
        return "no"
    parts = []
    for device in DEVICES:
        mine = [run for run in runs if run.device == device]
        if mine:
            parts.append(f"{sum(target.met(run.value) for run in mine)} of {len(mine)} on the {device}")
    return "in " + ", ".join(parts)


def markdown(targets: tuple[Target, ...] = TARGETS, results: Path = RESULTS) -> str:
    """The table (a row a target; each run's figure and commit, per GPU) and its notes."""
    lines = ["| issue | target | H100 | H200 | met |", "| --- | --- | --- | --- | --- |"]
    notes = []
    for target in targets:
        runs = target.runs(results)
        cells = [", ".join(_figure(run) for run in runs if run.device == device) or "not run" for device in DEVICES]
        mark = ""
        if target.note:
            notes.append(target.note)
            mark = f" [{len(notes)}]"
        lines.append(f"| #{target.issue} | {target.name} {target.bound}{mark} | {cells[0]} | {cells[1]} | {_verdict(target, runs)} |")
    files = sorted({source.file for target in targets for source in target.sources})
    lines += ["", *(f"- [{i}] {note}." for i, note in enumerate(notes, 1))]
    lines += ["", "Files, in `benchmarks/results/`: " + ", ".join(f"`{f}`" for f in files) + "."]
    return "\n".join(lines)


def plot(path: Path, targets: tuple[Target, ...] = TARGETS, results: Path = RESULTS) -> None:
    """Every run as measured / allowed on one log axis: left of 1 meets its target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(11, 0.42 * len(targets) + 1.6))
    styles = {"H100": ("o", "tab:blue"), "H200": ("s", "tab:orange")}
    shares = []
    for row, target in enumerate(targets):
        for run in target.runs(results):
            marker, colour = styles.get(run.device, ("x", "grey"))
            share = target.share_of_limit(run.value)
            shares.append(share)
            ax.plot(share, row, marker, color=colour, alpha=0.8, ms=7, mfc=colour if target.met(run.value) else "none")
    for device, (marker, colour) in styles.items():
        ax.plot([], [], marker, color=colour, ls="none", label=f"{device} (open: not met)")
    ax.axvline(1.0, color="black", lw=1)
    low, high = min(shares + [0.5]) / 1.2, max(shares + [2.0]) * 1.2
    ax.axvspan(low, 1.0, color="tab:green", alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_xticks([tick for tick in (0.25, 0.5, 1, 2, 4) if low <= tick <= high])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(range(len(targets)), [f"#{t.issue} {t.name} {t.bound}" for t in targets], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("measured / allowed (floors: allowed / measured); left of 1 meets the target")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("The issues' performance targets: the latest code's runs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replace_in_readme(readme: Path, table: str) -> None:
    """Rewrite the block between the README's two markers."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{readme} has no block between {README_BEGIN!r} and {README_END!r}")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, help="rewrite this README's targets block instead of printing the table")
    parser.add_argument("--plot", type=Path, help="also draw every run against its target to this PNG")
    args = parser.parse_args()
    table = markdown()
    if args.readme:
        replace_in_readme(args.readme, table)
    else:
        print(table)
    if args.plot:
        plot(args.plot)


if __name__ == "__main__":
    main()
