"""Photo -> avatar reconstruction jobs: a bounded queue, one job at a time, in a child process.

Reconstruction runs native code that can crash or exhaust memory on a bad input (OpenCV, torch,
CUDA, compiled engines: loading an AOTInductor package segfaulted on the H200 image). In a child
process such a failure costs one avatar ("the reconstruction process died") instead of the
server and every session it streams, and a fresh child takes the next job. A job's progress (its
current stage) is written to the avatar's metadata as it goes, so that ``GET /avatars/{id}``
shows it and a restart knows what was in flight.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from ..engine.gaussians import GaussianCloud
from .avatar_store import AvatarRecord, AvatarStore

logger = logging.getLogger(__name__)

Reconstruct = Callable[[Path, Callable[[str], None]], GaussianCloud]
"""(photo path, report stage name) -> avatar. Raises ValueError subclasses for bad photos. It runs
in the child process, so it must pickle: a module-level function or a ``functools.partial`` of one."""

_SPAWN = multiprocessing.get_context("spawn")  # never fork a process that holds CUDA and threads


class QueueFull(RuntimeError):
    """More reconstructions are waiting than the server accepts."""


class ReconstructionFailed(RuntimeError):
    """The child ended without an avatar: an error in it (named by its type), or its death (killed,
    out of memory, a crash in native code)."""


def reconstruct_uploaded_photo(photo: Path, report: Callable[[str], None], **options) -> GaussianCloud:
    """The server's default ``Reconstruct``: ``engine.reconstruct.reconstruct_photo`` with the
    server's ``options`` (checkpoints, engine, engine_cache)."""
    # Imported on first use: streaming needs none of the reconstruction's dependencies.
    from ..engine.reconstruct import reconstruct_photo

    return reconstruct_photo(photo, progress=report, **options)


class ReconstructionQueue:
    def __init__(self, store: AvatarStore, reconstruct: Reconstruct, on_ready: Callable[[str, GaussianCloud], None], max_pending: int = 8) -> None:
        self.store = store
        self.reconstruct = reconstruct
        self.on_ready = on_ready
        self.max_pending = max_pending
        self._pending: asyncio.Queue[AvatarRecord] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._child: multiprocessing.process.BaseProcess | None = None

    def check_room(self) -> None:
        if self._pending.qsize() >= self.max_pending:
            raise QueueFull(f"{self._pending.qsize()} reconstructions are already waiting; try again later")

    def submit(self, record: AvatarRecord) -> None:
        self.check_room()
        self._pending.put_nowait(record)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="splatcast-reconstruct")

    def shutdown(self) -> None:
        """Stop now: a job in flight is killed (its avatar stays "running", and the store's
        recovery queues it again at the next start) rather than waited for."""
        if self._worker is not None:
            self._worker.cancel()
        if self._child is not None and self._child.is_alive():
            self._child.kill()

    async def _work(self) -> None:
        while not self._pending.empty():
            record = self._pending.get_nowait()
            record.status = "running"
            self.store.put(record)
            try:
                cloud = await self._reconstruct_in_child(record)
                await asyncio.to_thread(self.store.finish, record, cloud)
            except ValueError as error:  # the photo's fault: no person, unreadable, too small ...
                self.store.fail(record, str(error))
            except ReconstructionFailed as error:  # our fault; the avatar says so rather than hang in "running"
                logger.error("reconstruction of %s failed: %s", record.id, error)
                self.store.fail(record, f"internal error: {error}")
            except Exception as error:  # ours too, in this process (storing the avatar)
                logger.exception("reconstruction of %s failed", record.id)
                self.store.fail(record, f"internal error: {type(error).__name__}")
            else:
                self.on_ready(record.id, cloud)

    async def _reconstruct_in_child(self, record: AvatarRecord) -> GaussianCloud:
        """One job in a fresh process, its stages written to ``record`` as they come."""
        receiving, sending = _SPAWN.Pipe(duplex=False)
        child = self._child = _SPAWN.Process(
            target=_child_main, args=(self.reconstruct, self.store.source_path(record), sending), name="splatcast-reconstruct", daemon=True
        )
        child.start()
        sending.close()  # the child holds the only writer: its end, or its death, is the pipe's EOF
        try:
            while True:
                kind, value = await _receive(receiving, child)
                if kind == "stage":
                    record.stage = value
                    self.store.put(record)
                elif kind == "done":
                    return GaussianCloud(*(torch.from_numpy(array) for array in value))
                elif kind == "bad photo":
                    raise ValueError(value)
                else:
                    raise ReconstructionFailed(value)
        finally:
            if child.is_alive():  # cancelled mid-job
                child.kill()
            await asyncio.to_thread(child.join)
            receiving.close()
            self._child = None


async def _receive(receiving: Connection, child: multiprocessing.process.BaseProcess) -> tuple[str, object]:
    """The child's next message, read on a thread: the wait is the job's length, and an avatar's
    arrays are megabytes, too long a read for the event loop."""
    try:
        return await asyncio.to_thread(receiving.recv)
    except EOFError:
        await asyncio.to_thread(child.join)
        raise ReconstructionFailed(f"the reconstruction process died (exit code {child.exitcode})") from None


def _child_main(reconstruct: Reconstruct, photo: Path, sending: Connection) -> None:
    """The child: run the job, send its stages and its answer. Exceptions are sent as text, as
    those with constructor arguments of their own would not unpickle; tensors as arrays."""
    try:
        cloud = reconstruct(photo, lambda stage: sending.send(("stage", stage))).to("cpu")
        sending.send(("done", [tensor.detach().numpy() for tensor in (cloud.means, cloud.quats, cloud.scales, cloud.opacities, cloud.sh)]))
    except ValueError as error:
        sending.send(("bad photo", str(error)))
    except Exception as error:
        logger.exception("reconstruction failed")
        sending.send(("failed", type(error).__name__))
