"""What the render loop and its tracks cost the event loop per frame, without aiortc (issue 6).

    python benchmarks/render_loop_cost_cpu.py OUT.json [--sessions 1,8] [--seconds 10]

``RenderLoop`` with N tracks at 60 fps whose renderer hands back one cached 64x48 frame (nothing
is rendered, so the render thread is idle and the encoders nearly so), each track drained as
aiortc's sender drains it, with and without a new pose message parsed for every frame. The
figure is the event loop thread's CPU time per frame. Beside it, the cost to that thread of the
three hand-offs a frame makes: a wake-up from another thread (``call_soon_threadsafe``), a
``run_in_executor`` round trip, and a timed sleep.
"""

import argparse
import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
from provenance import cpu_run

from splatcast.streaming.frames import RenderedFrame
from splatcast.streaming.metrics import StreamMetrics
from splatcast.streaming.protocol import SizeLimits, parse_pose
from splatcast.streaming.render_loop import RenderLoop
from splatcast.streaming.track import AvatarTrack
from splatcast.streaming.viewer import pose_message

SETTLE_S = 2.0
HANDOFFS = 300
LIMITS = SizeLimits(64, 48)


class CachedFrameRenderer:
    """Hands back one encoder-ready frame for every frame asked of it."""

    frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24").reformat(format="yuv420p")

    def render(self, views, views_per_frame=None):
        return [RenderedFrame(self.frame, 0.0, 0.0) for _ in views_per_frame or [len(views)]]


async def loop_cpu_per_frame(sessions: int, new_poses: bool, seconds: float) -> dict:
    # Made beforehand, one a frame for the whole run, so that the loop's CPU is the server's alone.
    poses = [pose_message(seq, 10.0 + seq, 64, 48, 2.5, (0.0, 1.0, 0.0)) for seq in range(1, int(60 * (SETTLE_S + seconds + 1)))]
    render_loop = RenderLoop(StreamMetrics(lambda: []))
    tracks = []
    for _ in range(sessions):
        track = AvatarTrack(parse_pose(poses[0], LIMITS).views(), fps=60)
        track.codec_mime = "video/h264"
        render_loop.add(track, CachedFrameRenderer())
        tracks.append(track)
    frames = 0

    async def drain(track: AvatarTrack) -> None:
        nonlocal frames
        for message in poses[1:]:
            await track.recv()
            frames += 1
            if new_poses:
                track.update_pose(parse_pose(message, LIMITS))

    drains = [asyncio.create_task(drain(t)) for t in tracks]
    await asyncio.sleep(SETTLE_S)
    start_frames, start_cpu, start = frames, time.thread_time(), time.monotonic()
    await asyncio.sleep(seconds)
    count, cpu, wall = frames - start_frames, time.thread_time() - start_cpu, time.monotonic() - start
    for task in drains:
        task.cancel()
    for track in tracks:
        track.stop()
    render_loop.shutdown()
    return {"sessions": sessions, "new_pose_each_frame": new_poses, "fps_per_session": round(count / wall / sessions, 1), "loop_ms_per_frame": round(1e3 * cpu / count, 3)}


async def handoff_costs() -> dict:
    """Event-loop CPU (us) of each kind of hand-off, every 5 ms."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    calls = 0

    def on_wake() -> None:
        nonlocal calls
        calls += 1
        if calls == HANDOFFS:
            woken.set()

    def waker() -> None:
        for _ in range(HANDOFFS):
            time.sleep(0.005)
            loop.call_soon_threadsafe(on_wake)

    start = time.thread_time()
    threading.Thread(target=waker).start()
    await woken.wait()
    wake_us = 1e6 * (time.thread_time() - start) / HANDOFFS
    start = time.thread_time()
    for _ in range(HANDOFFS):
        await asyncio.sleep(0.005)
    sleep_us = 1e6 * (time.thread_time() - start) / HANDOFFS
    with ThreadPoolExecutor(1) as pool:
        start = time.thread_time()
        for _ in range(HANDOFFS):
            await loop.run_in_executor(pool, time.sleep, 0.005)
        executor_us = 1e6 * (time.thread_time() - start) / HANDOFFS
    return {"call_soon_threadsafe_wakeup_us": round(wake_us, 1), "timed_sleep_us": round(sleep_us, 1), "run_in_executor_round_trip_us": round(executor_us, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sessions", default="1,8", help="tracks on the loop, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    runs = []
    for sessions in (int(s) for s in args.sessions.split(",")):
        for new_poses in (False, True):
            runs.append(asyncio.run(loop_cpu_per_frame(sessions, new_poses, args.seconds)))
            print(runs[-1], flush=True)
    handoffs = asyncio.run(handoff_costs())
    print(handoffs)
    args.out.write_text(json.dumps({**cpu_run(), "window_s": args.seconds, "runs": runs, "handoffs": handoffs}, indent=1))


if __name__ == "__main__":
    main()
