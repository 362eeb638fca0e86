"""One render loop per render device: every tick, every due session's newest pose, rendered in
one batched call per avatar and view size, then encoded on a worker pool.

Batching is what lets one GPU serve many sessions: a stereo session adds two views to the batch,
a mono one adds one. Encoding runs on a pool sized to the CPU cores, one frame at a time per
session; a session whose previous frame is still encoding or unsent skips its slot, so a slow
session never holds the others back and nothing queues.

The render thread hands its frames to the encoder pool itself, and each encoded frame comes back
to the event loop: one wake-up of the loop a session-frame, where awaiting the render and the
encode took two. Each costs the loop 0.06-0.18 ms of CPU on this project's VMs
(``benchmarks/render_loop_cost_cpu.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor

from ..config import usable_cpu_count
from ..engine.cameras import Views
from .frames import FrameRenderer, RenderedFrame
from .metrics import StreamMetrics
from .track import AvatarTrack, FrameJob

logger = logging.getLogger(__name__)

MIN_SLEEP_S = 0.0005
"""Shortest nap between ticks: a due track that cannot start yet is looked at again this often."""


class RenderLoop:
    def __init__(self, metrics: StreamMetrics, encode_workers: int | None = None) -> None:
        self.metrics = metrics
        # One render thread: the renderer already uses every core (CPU) or the whole GPU.
        self._render_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="splatcast-render")
        self._encode_pool = ThreadPoolExecutor(max_workers=encode_workers or usable_cpu_count(), thread_name_prefix="splatcast-encode")
        self._tracks: dict[AvatarTrack, FrameRenderer] = {}
        # The base of this loop's slot grids (``pacing``): shared by its sessions, so that due
        # frames batch on one tick; random, so that a sharded server's workers do not all tick at once.
        self.slot_base = random.random()
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Future | None = None
        """What the loop awaits between ticks: resolved at the next slot, or by ``add``."""

    def add(self, track: AvatarTrack, renderer: FrameRenderer) -> None:
        track.pacer.base = self.slot_base
        track.on_free = self._wake  # a frame waiting past its slot (``late_start``) can start
        self._tracks[track] = renderer
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="splatcast-render-loop")
        else:
            self._wake()  # the new track's first frame is due now, not at the others' next slot

    def _wake(self) -> None:
        if self._wakeup is not None:
            _resolve(self._wakeup)

    async def on_render_thread(self, fn, *args):
        """``fn(*args)`` on the thread that renders, between frames: GPU set-up work belongs there."""
        return await asyncio.get_running_loop().run_in_executor(self._render_executor, fn, *args)

    def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._render_executor.shutdown(wait=False, cancel_futures=True)
        self._encode_pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        rendering: Future | None = None
        while self._tracks:
            now = time.monotonic()
            if rendering is not None and not rendering.done() and any(now >= t.next_slot() for t in self._tracks):
                # The last renders still run (the CPU renderer) while frames are due: wait, so that
                # those frames take the poses that come meanwhile. A GPU has mostly finished by
                # the next slot, and the loop is not woken for its renders.
                await asyncio.wrap_future(rendering)
                continue
            # Every due track's job is taken now, before any await: a pose arriving during one
            # batch's render must not move a track into a batch of another view size.
            batches: dict[tuple, list[tuple[AvatarTrack, FrameJob]]] = defaultdict(list)
            for track, renderer in list(self._tracks.items()):
                if track.readyState != "live":  # its session ended
                    del self._tracks[track]
                elif track.ready(now):
                    job = track.take_job(now)
                    batches[(renderer, job.views.width, job.views.height)].append((track, job))
            if not batches:
                upcoming = min((t.wake_at(now) for t in self._tracks), default=now)
                await self._sleep(max(upcoming - now, MIN_SLEEP_S))
                continue
            for (renderer, *_), batch in batches.items():
                # Stereo sessions first: a batch's shape is then its counts of stereo and mono
                # sessions, whichever were due, which keeps the renderer's set of captured shapes small.
                batch.sort(key=lambda item: -len(item[1].views))
                rendering = self._render_executor.submit(self._render, loop, renderer, batch)

    def _render(self, loop: asyncio.AbstractEventLoop, renderer: FrameRenderer, batch: list[tuple[AvatarTrack, FrameJob]]) -> None:
        """On the render thread: one batch's render, then its frames to the encoder pool."""
        try:
            views = Views.concat([job.views for _, job in batch])
            frames = renderer.render(views, [len(job.views) for _, job in batch])
        except Exception as error:  # a render failure ends these streams, not the server
            logger.exception("render failed for %d sessions", len(batch))
            for track, _ in batch:
                _call_soon(loop, track.fail, error)
            return
        self.metrics.render.observe(frames[0].render_ms / 1e3)
        for (track, job), frame in zip(batch, frames):
            self._encode_pool.submit(self._encode, loop, track, job, frame)

    async def _sleep(self, seconds: float) -> None:
        """Nap until the next slot. Poses never bring a slot forward, only ``add`` does (and
        wakes the loop), so it need not look every few milliseconds: it wakes when a frame is due."""
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        timer = loop.call_later(seconds, _resolve, self._wakeup)
        try:
            await self._wakeup
        finally:
            timer.cancel()
            self._wakeup = None

    @staticmethod
    def _encode(loop: asyncio.AbstractEventLoop, track: AvatarTrack, job: FrameJob, frame: RenderedFrame) -> None:
        """On an encoder thread: the packets go back to ``track`` on the event loop."""
        try:
            packets, timings = track.encode(job, frame)
        except Exception as error:  # the stream ends, not the server
            logger.error("encoder failed: %s", error)
            _call_soon(loop, track.fail, error)
        else:
            _call_soon(loop, track.deliver, job, packets, timings)


def _call_soon(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """``callback(*args)`` on ``loop``, unless it has closed (the server has stopped)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
