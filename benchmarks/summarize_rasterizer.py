"""One results file from a ``run_rasterizer_gpu.sh`` run (issue 3): per case, ours (FP16 and FP32
storage) and gsplat's medians side by side, the PSNR between them, the stage profile, the GPU
tests' summary; and the table the README shows.

    python benchmarks/summarize_rasterizer.py RUN_DIR benchmarks/results/rasterizer-<device>.json
"""

import json
import sys
from pathlib import Path

METHOD = (
    "median over the timed frames after warm-up, CUDA events around the whole call (each call ends "
    "synchronised); rgb: 8-bit RGB on the GPU (gsplat: its float image); i420: I420 frames, views side by "
    "side, in host memory (gsplat: + to_uint8 + kernels.colour.rgb_to_i420 on the GPU + copy to the host)"
)


def load_benchmarks(run: Path) -> list[dict]:
    return [b for name in ("rasterizer-splatcast.json", "rasterizer-gsplat.json") if (run / name).exists()
            for b in json.loads((run / name).read_text())["benchmarks"]]


def summarize(run: Path) -> dict:
    benchmarks = load_benchmarks(run)
    machine = json.loads((run / "rasterizer-splatcast.json").read_text())
    cases: dict[str, dict] = {}
    for b in benchmarks:
        e = b["extra_info"]
        case = cases.setdefault(e["case"], {})
        if "gpu_median_ms" not in e:  # the agreement test
            case["psnr_db"] = {k: v for k, v in e.items() if k.startswith("psnr")}
            continue
        case["target_ms"] = e["target_ms"]
        who = e["renderer"] if e["renderer"] != "splatcast" else f"splatcast_{e['storage']}"
        case.setdefault(who, {}).update({
            f"{e['output']}_median_ms": e["gpu_median_ms"],
            f"{e['output']}_p90_ms": e["gpu_p90_ms"],
            f"{e['output']}_host_median_ms": round(b["stats"]["median"] * 1e3, 4),
        })
    for case in cases.values():
        ours, theirs = case.get("splatcast_fp16", {}), case.get("gsplat 1.5.3", {})
        if ours and theirs:
            case["speedup_vs_gsplat_fp16"] = {out: round(theirs[f"{out}_median_ms"] / ours[f"{out}_median_ms"], 2) for out in ("rgb", "i420")}
    tests = (run / "tests.log").read_text().strip().splitlines() if (run / "tests.log").exists() else []
    gpu_line = (run / "run.log").read_text().splitlines()[1] if (run / "run.log").exists() else None
    return {
        "issue": 3,
        "gpu": gpu_line,
        "machine": machine["machine_info"]["device"],
        "torch": machine["machine_info"]["torch"],
        "date": machine["datetime"],
        "commit": machine["machine_info"].get("splatcast_commit") or machine["commit_info"].get("id", "")[:7],
        "method": METHOD,
        "gpu_tests": f"tests/test_cuda_rasterizer.py on this machine: {tests[-1].strip('= ')}" if tests else None,
        "cases": cases,
        "profile": json.loads((run / "profile.json").read_text())["profiles"] if (run / "profile.json").exists() else None,
    }


def table(summary: dict) -> str:
    """Markdown: per case, the target, ours (FP16, FP32) and gsplat, RGB then I420 + copy."""
    rows = ["| case | target | ours fp16 rgb | ours fp32 rgb | gsplat rgb | x gsplat | ours i420 + copy | gsplat + I420 + copy |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, case in summary["cases"].items():
        ours, fp32, theirs = case.get("splatcast_fp16", {}), case.get("splatcast_fp32", {}), case.get("gsplat 1.5.3", {})
        speedup = case.get("speedup_vs_gsplat_fp16", {}).get("rgb")
        ms = [ours.get("rgb_median_ms"), fp32.get("rgb_median_ms"), theirs.get("rgb_median_ms"), None,
              ours.get("i420_median_ms"), theirs.get("i420_median_ms")]
        cells = ["" if v is None else f"{v:.3f}" for v in ms]
        cells[3] = "" if speedup is None else f"{speedup:.1f}"
        rows.append(f"| {name} | {case.get('target_ms')} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    result = summarize(run_dir)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
