"""Plot a session sweep (pytest-benchmark JSON from test_sessions_gpu.py) to a PNG beside it."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
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
    fig.suptitle(f"{data['machine_info'].get('device', '')}  {commit[:8]}")
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1])
