"""libx264's cost frame by frame along the in-process latency benchmark's orbit, on this machine.

    python benchmarks/orbit_encode_cpu.py OUT.json [--latency RESULTS.json] [--threads 1,2]

Renders the orbit test_latency_gpu.py streams (the sample avatar at 1080p, 2 degrees a frame;
the reference renderer on a CPU), then encodes the frames in the benchmark's order, warm-up and
timed rounds, once per thread count, keeping each round's encode time and size. With
``--latency`` (a results file of test_latency_gpu.py) it also correlates them with that run's
pose -> encoded time of the same rounds: whether slow rounds there were frames that cost more
to encode (the content) or not (something else on that host).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from provenance import cpu_run
from rich.progress import track
from test_latency_gpu import FRAMES, WARMUP, orbit, percentiles

from splatcast.config import sample_avatar_path
from splatcast.engine.formats import load_asset
from splatcast.streaming.encoders import VideoEncoder
from splatcast.streaming.frames import FrameRenderer
from splatcast.streaming.protocol import SizeLimits, parse_pose

CASE = "1080p-mono"
WIDTH, HEIGHT = 1920, 1080


def encode_rounds(frames: list, threads: int) -> list[dict]:
    encoder = VideoEncoder("video/H264", fps=60, bitrate=8_000_000, threads=threads)
    rounds = []
    for n in range(WARMUP + FRAMES):
        frame = frames[n % len(frames)]
        frame.pts = n * 1500
        start = time.perf_counter()
        packets = encoder.encode(frame)
        rounds.append({"encode_ms": round(1e3 * (time.perf_counter() - start), 3), "bytes": sum(p.size for p in packets)})
    return rounds[WARMUP:]


def against_run(rounds: list[dict], latency: dict) -> dict:
    """This machine's encode time and size of each round beside that run's total for the round."""
    (bench,) = [b for b in latency["benchmarks"] if b["name"] == f"test_in_process_pose_to_encoded[{CASE}]"]
    totals = [1e3 * t for t in bench["stats"]["data"]]
    slow_cut = 1.5 * statistics.median(totals)
    slow = [i for i, t in enumerate(totals) if t > slow_cut]
    rest = [i for i in range(len(totals)) if i not in slow]
    mean_of = lambda key, picks: round(statistics.fmean(rounds[i][key] for i in picks), 3)  # noqa: E731
    return {
        "run": f"{latency['machine_info'].get('device')} {latency['machine_info'].get('splatcast_commit', '')}",
        "slow_rounds": slow,
        "slow_means_over_ms": round(slow_cut, 3),
        "correlation_encode_ms": round(statistics.correlation([r["encode_ms"] for r in rounds], totals), 3),
        "correlation_bytes": round(statistics.correlation([r["bytes"] for r in rounds], totals), 3),
        "encode_ms_mean_slow_rounds": mean_of("encode_ms", slow),
        "encode_ms_mean_other_rounds": mean_of("encode_ms", rest),
        "bytes_mean_slow_rounds": mean_of("bytes", slow),
        "bytes_mean_other_rounds": mean_of("bytes", rest),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--latency", type=Path, help="a test_latency_gpu.py results file to compare with")
    parser.add_argument("--threads", default="1,2", help="encoder thread counts, comma-separated")
    args = parser.parse_args()
    renderer = FrameRenderer(load_asset(sample_avatar_path()))
    limits = SizeLimits(WIDTH, HEIGHT)
    poses = orbit(renderer, WIDTH, HEIGHT)
    frames = [renderer.render(parse_pose(pose, limits).views())[0].frame for pose in track(poses, description="rendering the orbit")]
    latency = json.loads(args.latency.read_text()) if args.latency else None
    report = {
        **cpu_run(), "case": CASE, "rounds": FRAMES, "warmup": WARMUP, "by_threads": {},
    }
    for threads in (int(t) for t in args.threads.split(",")):
        rounds = encode_rounds(frames, threads)
        times = [r["encode_ms"] for r in rounds]
        entry = {"encode_ms": percentiles(times), "rounds": rounds}
        if latency is not None:
            entry["against"] = against_run(rounds, latency)
        report["by_threads"][str(threads)] = entry
        print(threads, "threads:", entry["encode_ms"], {k: v for k, v in entry.get("against", {}).items() if k != "slow_rounds"})
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
