"""Photo -> avatar reconstruction jobs: a bounded queue, one job at a time per render device.

A job's progress (its current stage) is written to the avatar's metadata as it goes, so that
``GET /avatars/{id}`` shows it and a restart knows what was in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..engine.gaussians import GaussianCloud
from .avatar_store import AvatarRecord, AvatarStore

logger = logging.getLogger(__name__)

Reconstruct = Callable[[Path, Callable[[str], None]], GaussianCloud]
"""(photo path, report stage name) -> avatar. Raises ValueError subclasses for bad photos."""


class QueueFull(RuntimeError):
    """More reconstructions are waiting than the server accepts."""


class ReconstructionQueue:
    def __init__(self, store: AvatarStore, reconstruct: Reconstruct, on_ready: Callable[[str, GaussianCloud], None], max_pending: int = 8) -> None:
        self.store = store
        self.reconstruct = reconstruct
        self.on_ready = on_ready
        self.max_pending = max_pending
        self._pending: asyncio.Queue[AvatarRecord] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="splatcast-reconstruct")
        self._worker: asyncio.Task | None = None

    def check_room(self) -> None:
        if self._pending.qsize() >= self.max_pending:
            raise QueueFull(f"{self._pending.qsize()} reconstructions are already waiting; try again later")

    def submit(self, record: AvatarRecord) -> None:
        self.check_room()
        self._pending.put_nowait(record)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="splatcast-reconstruct")

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._pending.empty():
            record = self._pending.get_nowait()
            record.status = "running"
            self.store.put(record)

            def report(stage: str, record: AvatarRecord = record) -> None:
                record.stage = stage
                loop.call_soon_threadsafe(self.store.put, record)

            try:
                cloud = await loop.run_in_executor(self._executor, self.reconstruct, self.store.source_path(record), report)
                await loop.run_in_executor(self._executor, self.store.finish, record, cloud)
            except ValueError as error:  # the photo's fault: no person, unreadable, too small ...
                self.store.fail(record, str(error))
            except Exception as error:  # our fault; the avatar says so rather than hang in "running"
                logger.exception("reconstruction of %s failed", record.id)
                self.store.fail(record, f"internal error: {type(error).__name__}")
            else:
                self.on_ready(record.id, cloud)
