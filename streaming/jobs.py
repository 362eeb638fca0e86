"""Photo -> avatar reconstruction jobs: a bounded queue, one job at a time, in a child process.

Reconstruction runs native code that can crash or exhaust memory on a bad input (OpenCV, torch,
CUDA, compiled engines: loading an AOTInductor package segfaulted on the H200 image). In a child
process such a failure costs one avatar ("the reconstruction process died") instead of the
server and every session it streams, and a fresh child takes the next job. A job's progress (its
current stage) is written to the avatar's metadata as it goes, so that ``GET /avatars/{id}``
shows it and a restart knows what was in flight.

The child outlives its job: starting one (a spawned interpreter importing torch) and loading the
learned pipeline's weights and engines take longer than a reconstruction, so one child serves
jobs until it has served ``jobs_per_child`` (which bounds what native code may leak) or failed
one with an error of its own (whose state is not trusted further); a photo's own fault keeps it.
With a ``prepare`` step (the learned pipeline's loading) a child is started, and prepared, at
the server's start (``start``) and whenever one is replaced, so that no photo waits for the
loading, and it stays while the server runs. Without one (the weight-free path, which loads
little) a child starts with the first photo and ends after ``idle_seconds`` without one, giving
its memory back.
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
Prepare = Callable[[], object]
"""Run once in each child before its first photo (and pickled as ``Reconstruct`` is)."""

_SPAWN = multiprocessing.get_context("spawn")  # never fork a process that holds CUDA and threads
JOBS_PER_CHILD = 50
IDLE_SECONDS = 600.0
STOP_GRACE_SECONDS = 10.0
"""How long a retired child (its pipe closed) may take to exit before it is killed."""


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


def load_learned_pipeline(**options) -> None:
    """The server's ``Prepare`` with checkpoints: ``engine.reconstruct.load_learned_pipeline`` with
    the options ``reconstruct_uploaded_photo`` gets, so that its first photo finds them loaded."""
    from ..engine.reconstruct import load_learned_pipeline

    load_learned_pipeline(**options)


class ReconstructionQueue:
    def __init__(
        self,
        store: AvatarStore,
        reconstruct: Reconstruct,
        on_ready: Callable[[str, GaussianCloud], None],
        max_pending: int = 8,
        jobs_per_child: int = JOBS_PER_CHILD,
        idle_seconds: float = IDLE_SECONDS,
        prepare: Prepare | None = None,
    ) -> None:
        self.store = store
        self.reconstruct = reconstruct
        self.prepare = prepare
        self.on_ready = on_ready
        self.max_pending = max_pending
        self.jobs_per_child = jobs_per_child
        self.idle_seconds = idle_seconds
        self._pending: asyncio.Queue[AvatarRecord] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._child: _Child | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start the prepared child now (the server's start-up), if there is a ``prepare`` step."""
        if self.prepare is not None and self._child is None:
            self._child = _Child.start(self.reconstruct, self.prepare)

    def check_room(self) -> None:
        if self._pending.qsize() >= self.max_pending:
            raise QueueFull(f"{self._pending.qsize()} reconstructions are already waiting; try again later")

    def submit(self, record: AvatarRecord) -> None:
        self.check_room()
        self._pending.put_nowait(record)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="splatcast-reconstruct")

    @property
    def child_pid(self) -> int | None:
        """The reconstruction process waiting for or running a job; None when there is none."""
        return self._child.process.pid if self._child is not None else None

    def shutdown(self) -> None:
        """Stop now: a job in flight is killed (its avatar stays "running", and the store's
        recovery queues it again at the next start) rather than waited for."""
        if self._worker is not None:
            self._worker.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._child is not None:
            self._child.kill_now()
            self._child = None

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
        if self._child is not None and self.prepare is None:
            self._idle_timer = asyncio.get_running_loop().call_later(self.idle_seconds, self._retire_idle_child)

    async def _reconstruct_in_child(self, record: AvatarRecord) -> GaussianCloud:
        """One job in the waiting child (or a fresh one), its stages written to ``record`` as they come."""
        if self._child is not None and not self._child.process.is_alive():  # it died idle
            self._child.connection.close()
            self._child = None
        if self._child is None:
            self._child = _Child.start(self.reconstruct, self.prepare)
        child = self._child
        child.jobs += 1
        healthy = False
        try:
            child.connection.send(self.store.source_path(record))
            while True:
                kind, value = await child.receive()
                if kind == "stage":
                    record.stage = value
                    self.store.put(record)
                elif kind == "done":
                    healthy = True
                    return GaussianCloud(*(torch.from_numpy(array) for array in value))
                elif kind == "bad photo":
                    healthy = True
                    raise ValueError(value)
                else:
                    raise ReconstructionFailed(value)
        finally:
            if not healthy or child.jobs >= self.jobs_per_child:
                self._child = None
                if healthy:
                    child.retire()
                else:  # dead, failed, or cancelled mid-job
                    await child.kill()
                if self.prepare is not None and not self._cancelling():
                    self._child = _Child.start(self.reconstruct, self.prepare)

    def _cancelling(self) -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    def _retire_idle_child(self) -> None:
        self._idle_timer = None
        if self._child is not None and (self._worker is None or self._worker.done()):
            self._child.retire()
            self._child = None


class _Child:
    """A reconstruction process and the parent's end of its pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.jobs = 0

    @classmethod
    def start(cls, reconstruct: Reconstruct, prepare: Prepare | None) -> _Child:
        parent, child = _SPAWN.Pipe()
        process = _SPAWN.Process(target=_child_main, args=(reconstruct, prepare, child), name="splatcast-reconstruct", daemon=True)
        process.start()
        child.close()  # the child holds the only other end: its death is this end's EOF
        return cls(process, parent)

    async def receive(self) -> tuple[str, object]:
        """The child's next message, read on a thread: the wait is the job's length, and an
        avatar's arrays are megabytes, too long a read for the event loop."""
        try:
            return await asyncio.to_thread(self.connection.recv)
        except EOFError:
            await asyncio.to_thread(self.process.join)
            raise ReconstructionFailed(f"the reconstruction process died (exit code {self.process.exitcode})") from None

    def retire(self) -> None:
        """Let the process end without waiting for it: its pipe closed, it exits once it sees
        that; one still alive ``STOP_GRACE_SECONDS`` later is killed."""
        self.connection.close()
        asyncio.get_running_loop().call_later(STOP_GRACE_SECONDS, self.kill_now)

    async def kill(self) -> None:
        self.connection.close()
        self.kill_now()
        await asyncio.to_thread(self.process.join)

    def kill_now(self) -> None:
        if self.process.is_alive():  # also reaps a process that has exited
            self.process.kill()


def _child_main(reconstruct: Reconstruct, prepare: Prepare | None, connection: Connection) -> None:
    """The child: prepare, then take photos until the parent closes the pipe, send each job's
    stages and its answer. Exceptions are sent as text, as those with constructor arguments of
    their own would not unpickle; tensors as arrays. An error of its own ends the child after it
    is reported. A failed preparation is logged and left to the jobs, which meet it again and
    report it as theirs."""
    if prepare is not None:
        try:
            prepare()
        except ValueError as error:  # weights that are missing or do not fit: the user's to mend
            logger.error("preparing the reconstruction failed: %s", error)
        except Exception:
            logger.exception("preparing the reconstruction failed")
    while True:
        try:
            photo = connection.recv()
        except EOFError:
            return
        try:
            cloud = reconstruct(photo, lambda stage: connection.send(("stage", stage))).to("cpu")
            connection.send(("done", [tensor.detach().numpy() for tensor in (cloud.means, cloud.quats, cloud.scales, cloud.opacities, cloud.sh)]))
        except ValueError as error:
            connection.send(("bad photo", str(error)))
        except Exception as error:
            logger.exception("reconstruction failed")
            connection.send(("failed", type(error).__name__))
            return
