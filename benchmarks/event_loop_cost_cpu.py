"""What one session costs a server's event loop per pose message, on this machine (issue 6).

    python benchmarks/event_loop_cost_cpu.py OUT.json [--rates 6,30,60,120] [--size 320x240]

One ``splatcast serve`` (a single process: sessions on its event loop) and, for each pose rate
in turn, one receive-only viewer sending poses at that rate. Over a window the server's main
thread's CPU time (the event loop: aiortc's SCTP, DTLS and RTP in Python, the pose parsing, the
render loop's scheduling; rendering and encoding run on other threads) and the frames it sent.
The frame rate is the CPU renderer's and about the same at every pose rate, so a line through
(pose rate, event-loop ms per second) gives the cost of a pose message (its slope) and, divided
by the frame rate, a bound on the cost of a frame (its intercept, which also holds the loop's
fixed work: timers, RTCP).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import unused_port
from profile_server_gpu import TICKS, scrape, start_server, thread_ticks
from provenance import cpu_run

SETTLE_S = 6.0
WINDOW_S = 20.0


def measure(url: str, pid: int, rate: int, width: int, height: int) -> dict:
    viewer = subprocess.Popen(
        [sys.executable, "-m", "splatcast.streaming.viewer", url, "--seconds", str(SETTLE_S + WINDOW_S + 4),
         "--width", str(width), "--height", str(height), "--no-decode", "--pose-hz", str(rate)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    time.sleep(SETTLE_S)
    ticks, frames, start = thread_ticks(pid)[pid], scrape(url)["frames"], time.monotonic()
    time.sleep(WINDOW_S)
    ticks, frames, wall = thread_ticks(pid)[pid] - ticks, scrape(url)["frames"] - frames, time.monotonic() - start
    report = json.loads(viewer.communicate()[0].decode().strip().splitlines()[-1])
    return {"pose_hz": rate, "frames_per_s": round(frames / wall, 2), "event_loop_ms_per_s": round(1e3 * ticks / TICKS / wall, 2), "viewer_fps": report["fps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rates", default="6,30,60,120", help="pose messages per second, comma-separated")
    parser.add_argument("--size", default="320x240", help="the stream's size (the CPU renderer sets the frame rate)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    port = unused_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "splatcast.cli", "serve", "--port", str(port), "--fps", "60", "--width", str(width), "--height", str(height)]
    server = start_server(serve, url, Path(tempfile.gettempdir()) / "splatcast-event-loop-cost-server.log")
    try:
        runs = []
        for rate in (int(r) for r in args.rates.split(",")):
            runs.append(measure(url, server.pid, rate, width, height))
            print(runs[-1], flush=True)
    finally:
        server.terminate()
        server.wait()
    slope, intercept = statistics.linear_regression([r["pose_hz"] for r in runs], [r["event_loop_ms_per_s"] for r in runs])
    fps = statistics.fmean(r["frames_per_s"] for r in runs)
    report = {
        **cpu_run(), "size": [width, height], "window_s": WINDOW_S, "runs": runs,
        "event_loop_ms_per_pose": round(slope, 3), "event_loop_ms_per_frame_at_most": round(intercept / fps, 3),
    }
    args.out.write_text(json.dumps(report, indent=1))
    print({k: v for k, v in report.items() if k.startswith("event_loop")})


if __name__ == "__main__":
    main()
