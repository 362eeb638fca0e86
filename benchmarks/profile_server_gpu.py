"""Where a streaming server's CPU goes, for the session sweep (issue 6).

    python benchmarks/profile_server_gpu.py OUT_DIR [--sessions 8] [--workers 1] [--encoder-threads 0,1] [--py-spy]

For each encoder-thread setting: one ``splatcast serve`` at 720p60 (``--workers`` processes
hosting the sessions; 1: the server itself) with ``--sessions`` viewer processes, and over a
measuring window the CPU per thread of each server process (the busiest threads first; a
process's main thread runs its event loop, and it holds the GIL), its delivered fps, the
stage times and skipped slots from ``/metrics``, and the viewers' CPU. With ``--py-spy`` the
last setting's busiest session host (the server, or its busiest worker) is then sampled by
``py-spy record`` for another window (native frames, every thread; sampling slows it, so not
during the measured one), its collapsed stacks and a summary of them written to OUT_DIR.

On the GPU machine it needs, besides the streaming wheels, py-spy's and those of roma, trimesh
and smplx: ``splatcast serve`` imports the body prior to report its errors.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from test_sessions_gpu import cpu_seconds, samples_of, total

WINDOW_S = 8.0
STARTUP_TIMEOUT_S = 120.0
SETTLE_S = 4.0
"""After the last session connects, before the window: its first frames and keyframe."""
TICKS = os.sysconf("SC_CLK_TCK")


def thread_ticks(pid: int) -> dict[int, int]:
    """utime + stime of each thread of ``pid``."""
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (a sharded server's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return sorted(found)


def healthy(url: str) -> bool:
    try:
        return json.loads(urllib.request.urlopen(f"{url}/healthz").read())["status"] == "ok"
    except (OSError, ValueError):
        return False


def start_server(command: list[str], url: str, log: Path) -> subprocess.Popen:
    """Start ``splatcast serve`` (``command``), its output to ``log``; return once ``url`` is healthy."""
    with log.open("w") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not healthy(url):  # a sharded server's workers too
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            raise RuntimeError(f"server did not start:\n{log.read_text()}")
        time.sleep(0.2)
    return server


COUNTERS = {"sessions": "splatcast_sessions", "frames": "splatcast_frames_total", "skipped": "splatcast_frames_skipped_total"}
STAGES = ("render", "convert", "encode")


def scrape(url: str) -> dict[str, float]:
    """Sums over sessions and workers: live sessions, frames sent, slots skipped, and each stage's
    time and count."""
    samples = samples_of(urllib.request.urlopen(f"{url}/metrics").read().decode())
    totals = {key: total(samples, name) for key, name in COUNTERS.items()}
    for stage in STAGES:
        for part in ("sum", "count"):
            totals[f"{stage}_{part}"] = total(samples, f"splatcast_{stage}_seconds_{part}")
    return totals


def summarize(stacks: Path, top: int = 45) -> None:
    """py-spy's collapsed stacks -> the busiest frames, self and inclusive, beside them as text."""
    own, inclusive, per_thread, total = Counter(), Counter(), Counter(), 0
    for line in stacks.read_text().splitlines():
        path, _, count = line.rpartition(" ")
        frames, n = path.split(";"), int(count)
        total += n
        per_thread[frames[0]] += n
        own[frames[-1]] += n
        for frame in set(frames[1:]):
            inclusive[frame] += n
    lines = [f"{total} samples"]
    for title, counter in (("threads", per_thread), ("self", own), ("inclusive", inclusive)):
        lines.append(f"--- {title}")
        lines += [f"{100 * n / total:6.1f}%  {frame[:160]}" for frame, n in counter.most_common(top)]
    stacks.with_suffix(".txt").write_text("\n".join(lines) + "\n")


def measure(args: argparse.Namespace, threads: int, profile_to: Path | None) -> dict:
    port = 8090 + threads
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "splatcast.cli", "serve", "--port", str(port), "--width", "1280", "--height", "720",
             "--max-sessions", str(args.sessions), "--sessions-per-address", str(args.sessions), "--idle-timeout", "60",
             "--encoder-threads", str(threads), "--workers", str(args.workers), "--switch-interval-ms", str(args.switch_interval_ms)]
    server = start_server(serve, url, args.out / f"server-{args.sessions}-w{args.workers}-t{threads}-s{args.switch_interval_ms:g}.log")
    viewers: list[subprocess.Popen] = []
    try:
        viewers = [subprocess.Popen([sys.executable, "-m", "splatcast.streaming.viewer", url, "--seconds", str(2 * WINDOW_S + 12 + args.sessions / 2)],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(args.sessions)]
        return measure_window(args, threads, server.pid, url, viewers, profile_to)
    finally:
        for process in (*viewers, server):
            process.kill()
            process.wait()


def measure_window(args: argparse.Namespace, threads: int, pid: int, url: str, viewers: list[subprocess.Popen], profile_to: Path | None) -> dict:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while scrape(url)["sessions"] < args.sessions:  # every viewer started and connected
        if time.monotonic() > deadline:
            raise RuntimeError(f"{scrape(url)['sessions']:.0f} of {args.sessions} sessions connected")
        time.sleep(0.5)
    time.sleep(SETTLE_S)
    processes = [pid, *children(pid)]
    before_threads, before = [thread_ticks(p) for p in processes], scrape(url)
    viewer_pids = [v.pid for v in viewers]
    before_viewers = cpu_seconds(viewer_pids)
    start = time.monotonic()
    time.sleep(WINDOW_S)
    wall = time.monotonic() - start
    after_threads, after = [thread_ticks(p) for p in processes], scrape(url)
    after_viewers = cpu_seconds(viewer_pids)
    per_process = []
    for p, old, new in zip(processes, before_threads, after_threads):
        busy = {t: (new[t] - old.get(t, 0)) / TICKS / wall for t in new}
        others = sorted((b for t, b in busy.items() if t != p), reverse=True)
        per_process.append({"pid": p, "cores": round(sum(busy.values()), 3), "threads": len(busy),
                            "main_thread": round(busy.get(p, 0.0), 3), "busiest_other_threads": [round(b, 3) for b in others[:6]]})
    delta = {k: after[k] - before[k] for k in after}
    if profile_to is not None:  # after the clean window: sampling slows the server down
        host = max(per_process[1:] or per_process, key=lambda p: p["cores"])["pid"]  # the busiest worker
        subprocess.run(["py-spy", "record", "--native", "--threads", "-r", "100", "-f", "raw", "-o", str(profile_to),
                        "-d", str(int(WINDOW_S)), "--pid", str(host)], capture_output=True)
        summarize(profile_to)
    outputs = [v.communicate()[0].strip().splitlines() for v in viewers]
    reports = [json.loads(lines[-1]) for lines in outputs if lines]  # a viewer that failed printed nothing
    return {
        "sessions": args.sessions,
        "workers": args.workers,
        "encoder_threads": threads,
        "switch_interval_ms": args.switch_interval_ms,
        "server_fps_per_session": round(delta["frames"] / wall / args.sessions, 2),
        "skipped_slots_per_s_per_session": round(delta["skipped"] / wall / args.sessions, 2),
        **{f"{s}_ms_mean": round(1e3 * delta[f"{s}_sum"] / delta[f"{s}_count"], 3) if delta[f"{s}_count"] else None for s in STAGES},
        "server_cores_busy": round(sum(p["cores"] for p in per_process), 2),
        "server_cpu_ms_per_frame": round(1e3 * sum(p["cores"] for p in per_process) / max(delta["frames"] / wall, 1e-9), 2),
        "server_processes": per_process,
        "viewer_cores_busy": round((after_viewers - before_viewers) / wall, 2),
        "viewers_reporting": len(reports),
        "viewer_fps": sorted(r["fps"] for r in reports),
        "viewer_latency_ms_p50": sorted(r["latency_ms_p50"] for r in reports if r["latency_ms_p50"] is not None),
        "profile": profile_to.name if profile_to else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--encoder-threads", default="0,1")
    parser.add_argument("--switch-interval-ms", type=float, default=0.0, help="the server's --switch-interval-ms (0: Python's 5 ms)")
    parser.add_argument("--py-spy", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = [int(t) for t in args.encoder_threads.split(",")]
    results = []
    for i, threads in enumerate(settings):
        spy = args.py_spy and shutil.which("py-spy") is not None and i == len(settings) - 1
        result = measure(args, threads, args.out / f"server-{args.sessions}-w{args.workers}-t{threads}.stacks" if spy else None)
        print(json.dumps(result), flush=True)
        results.append(result)
    (args.out / f"server-profile-{args.sessions}-w{args.workers}-s{args.switch_interval_ms:g}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
