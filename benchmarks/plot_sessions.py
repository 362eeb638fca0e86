"""Plot a session sweep (pytest-benchmark JSON from test_sessions_gpu.py) to a PNG beside it."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    rows = sorted((b["extra_info"] for b in data["benchmarks"] if "sessions" in b["extra_info"]), key=lambda r: r["sessions"])
    n = [r["sessions"] for r in rows]
    fig, (fps_ax, ms_ax) = plt.subplots(1, 2, figsize=(11, 4))
    fps_ax.plot(n, [r["server_fps_median"] for r in rows], "o-", label="server, median session")
    fps_ax.plot(n, [r["server_fps_min"] for r in rows], "o--", label="server, slowest session")
    fps_ax.plot(n, [r["viewer_fps_median"] for r in rows], "s:", label="viewers decoded, median")
    fps_ax.axhline(58, color="grey", lw=0.8)
    fps_ax.set(xscale="log", xlabel="concurrent 720p60 sessions", ylabel="frames per second", title="Delivered frame rate")
    fps_ax.set_xticks(n, [str(v) for v in n])
    fps_ax.legend()
    ms_ax.plot(n, [r["server_pose_to_encoded_ms_p99_at_most"] for r in rows], "o-", label="server pose->encoded p99 (bucket edge)")
    ms_ax.plot(n, [r["render_ms_per_tick_mean"] for r in rows], "o--", label="render per tick, mean")
    ms_ax.plot(n, [r["viewer_latency_ms_p50_median"] for r in rows], "s:", label="viewer pose->decoded p50")
    ms_ax.set(xscale="log", yscale="log", xlabel="concurrent 720p60 sessions", ylabel="ms", title="Latency and GPU time")
    ms_ax.set_xticks(n, [str(v) for v in n])
    ms_ax.legend()
    fig.suptitle(f"{data['machine_info'].get('device', '')}  {data['commit_info'].get('id', '')[:8]}")
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1])
