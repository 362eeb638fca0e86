"""The front of a sharded server: one address for users, sessions spread over worker processes.

A single process tops out at a few cores however many sessions it hosts: aiortc's RTP
packetization, SRTP, SCTP and DTLS run in Python on one event loop. The front keeps everything
else of ``StreamingServer`` (web client, avatar API and store, reconstruction jobs, ``/scene``,
``/healthz``) and the global session limits and auth, and hands each admitted ``POST /offer`` to the
worker (``workers.py``) with the fewest sessions, relaying its answer. Media then flow between the
client and that worker directly. Workers report each session's end over their pipe; a worker that
dies is noticed through its process sentinel, its sessions leave the counts, and it is started
again. ``/metrics`` joins the workers' metrics, each sample labelled with its ``worker``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import secrets
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from ..engine.formats import save_asset
from .metrics import merge_expositions
from .server import StreamingServer
from .session import SessionBook, new_session_id
from .workers import SECRET_HEADER, SESSION_HEADER, WorkerSpec, run_worker

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0
"""A worker loads its avatars and compiles its renderer (CUDA kernels on a first run) before it is ready."""
FORWARD_TIMEOUT_S = 20.0
"""An offer's negotiation in a worker takes milliseconds; past this the worker is taken as stuck."""
SCRAPE_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
RESTART_DELAY_S = 1.0
"""Pause before starting a dead worker again, so a worker that cannot start does not spin."""


@dataclass(eq=False)
class WorkerHandle:
    """The front's view of one worker process (one life of it: a restart makes a new handle)."""

    index: int
    process: BaseProcess
    conn: Connection
    ready: asyncio.Future
    """Resolves to the worker's port once it listens."""

    @property
    def port(self) -> int | None:
        return self.ready.result() if self.ready.done() and not self.ready.cancelled() else None

    def send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except OSError:  # it just died; its sentinel reports that
            pass


@dataclass
class RemoteSession:
    id: str
    worker: WorkerHandle
    avatar_id: str
    token_id: str | None
    address: str | None


class WorkerSessions(SessionBook):
    """The front's count of the sessions its workers host, against the global limits."""

    def open(self, worker: WorkerHandle, avatar_id: str, token_id: str | None, address: str | None) -> RemoteSession:
        session = RemoteSession(new_session_id(), worker, avatar_id, token_id, address)
        self.sessions[session.id] = session
        return session

    def end(self, session_id: str, worker: WorkerHandle) -> None:
        if (session := self.sessions.get(session_id)) is not None and session.worker is worker:
            del self.sessions[session_id]

    def on(self, worker: WorkerHandle) -> int:
        return sum(s.worker is worker for s in self.sessions.values())

    def drop_worker(self, worker: WorkerHandle) -> int:
        gone = [sid for sid, s in self.sessions.items() if s.worker is worker]
        for session_id in gone:
            del self.sessions[session_id]
        return len(gone)

    async def close_all(self) -> None:
        """The workers close their sessions as they stop."""
        self.sessions.clear()


class ShardedServer(StreamingServer):
    def _host_sessions(self) -> None:
        """The front streams nothing: it starts workers that do (each given the initial avatars
        as files, the store's folder and a per-run secret) and counts their sessions against
        the limits."""
        config = self.config
        self.sessions = WorkerSessions(config.max_sessions, config.sessions_per_token, config.sessions_per_address)
        self._initial = tempfile.TemporaryDirectory(prefix="splatcast-initial-avatars-")
        paths = {}
        for number, (avatar_id, avatar) in enumerate(self.avatars.items()):
            paths[avatar_id] = str(Path(self._initial.name) / f"{number}.ply")
            save_asset(avatar.cloud, paths[avatar_id])
        self._secret = secrets.token_urlsafe(32)
        worker_config = dataclasses.replace(
            config, host="127.0.0.1", port=0, workers=1, store_dir=str(self.store.root), sessions_per_address=config.max_sessions
        )
        self._spec = lambda index: WorkerSpec(index, paths, self.default_avatar, worker_config, self._secret, logging.getLogger().getEffectiveLevel())
        self.workers: list[WorkerHandle | None] = [None] * config.workers
        self._supervisors: list[asyncio.Task] = []
        self._http: aiohttp.ClientSession | None = None
        self.front_metrics = CollectorRegistry()
        self.worker_restarts = Counter("splatcast_worker_restarts", "Worker processes started again after they died", registry=self.front_metrics)

    async def _stop_sessions(self) -> None:
        await self._stop_workers()
        await self.sessions.close_all()

    async def _startup(self, app: web.Application) -> None:
        await super()._startup(app)  # the front owns the store: recovery and resumed jobs run here
        loop = asyncio.get_running_loop()
        first_starts = [loop.create_future() for _ in self.workers]
        self._supervisors = [asyncio.create_task(self._keep_running(i, started)) for i, started in enumerate(first_starts)]
        try:
            await asyncio.gather(*first_starts)
        except BaseException:
            await self._stop_workers()
            raise
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        logger.info("%d workers ready on ports %s", len(self.workers), ", ".join(str(w.port) for w in self.workers))

    def _spawn(self, index: int) -> WorkerHandle:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no CUDA state inherited
        conn, child_conn = context.Pipe()
        process = context.Process(target=run_worker, args=(self._spec(index), child_conn), name=f"splatcast-worker-{index}", daemon=True)
        process.start()
        child_conn.close()  # else the pipe would never report the worker's end
        handle = WorkerHandle(index, process, conn, asyncio.get_running_loop().create_future())
        asyncio.get_running_loop().add_reader(conn.fileno(), self._on_message, handle)
        self.workers[index] = handle
        return handle

    def _on_message(self, worker: WorkerHandle) -> None:
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):  # it exited; its sentinel tells _keep_running
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            return
        if kind == "ready" and not worker.ready.done():
            worker.ready.set_result(value)
        elif kind == "ended":
            self.sessions.end(value, worker)

    async def _keep_running(self, index: int, first_start: asyncio.Future) -> None:
        """Start worker ``index``, and start it again whenever it dies. ``first_start`` resolves when
        it first listens, or fails if it cannot start at all."""
        while True:
            try:
                worker = self._spawn(index)
                if first_start.done():
                    self.worker_restarts.inc()
                await self._watch(worker, first_start)
            except Exception as error:  # e.g. no process could be started
                if not first_start.done():
                    first_start.set_exception(error)
                    return
                logger.exception("worker %d could not be started again", index)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _watch(self, worker: WorkerHandle, first_start: asyncio.Future) -> None:
        """Returns once ``worker`` has exited and its sessions are out of the counts."""
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(worker.process.sentinel, lambda: exited.done() or exited.set_result(None))
        try:
            await asyncio.wait([worker.ready, exited], timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            if not worker.ready.done() and not exited.done():
                logger.error("worker %d not ready after %.0f s; killing it", worker.index, START_TIMEOUT_S)
                worker.process.kill()
            if worker.ready.done() and not first_start.done():
                first_start.set_result(None)
            await exited
        finally:
            loop.remove_reader(worker.process.sentinel)
            loop.remove_reader(worker.conn.fileno())
        worker.process.join()
        worker.conn.close()
        lost = self.sessions.drop_worker(worker)
        code = worker.process.exitcode
        if not worker.ready.done():
            worker.ready.cancel()
            raise RuntimeError(f"streaming worker {worker.index} exited with code {code} while starting")
        logger.error("worker %d (pid %d) exited with code %s; %d sessions lost; starting it again", worker.index, worker.process.pid, code, lost)

    async def _shutdown(self, app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()
        await super()._shutdown(app)
        self._initial.cleanup()

    async def _stop_workers(self) -> None:
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        live = [w for w in self.workers if w is not None and w.process.exitcode is None]
        for worker in live:
            worker.send(("stop", None))
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, w.process.join, STOP_TIMEOUT_S) for w in live))
        for worker in live:
            if worker.process.exitcode is None:
                logger.warning("worker %d did not stop within %.0f s; killing it", worker.index, STOP_TIMEOUT_S)
                worker.process.kill()
                worker.process.join()
        for worker in self.workers:
            if worker is not None:
                worker.conn.close()

    async def _forget_avatar(self, avatar_id: str) -> None:
        for worker in self._ready_workers():
            worker.send(("forget", avatar_id))
        self.avatars.pop(avatar_id, None)

    def _ready_workers(self) -> list[WorkerHandle]:
        return [w for w in self.workers if w is not None and w.port is not None and w.process.exitcode is None]

    async def offer(self, request: web.Request) -> web.Response:
        body, avatar, token_id = await self._admit_offer(request)
        ready = self._ready_workers()
        if not ready:
            raise web.HTTPServiceUnavailable(text="no streaming worker is ready; try again in a few seconds")
        worker = min(ready, key=self.sessions.on)
        # Counted before forwarding: the limits hold across concurrent offers, and an end notice
        # that overtakes the answer still finds the session.
        session = self.sessions.open(worker, avatar.id, token_id, request.remote)
        headers = {SECRET_HEADER: self._secret, SESSION_HEADER: session.id}
        try:
            async with self._http.post(f"http://127.0.0.1:{worker.port}/offer", json=body, headers=headers) as response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            self.sessions.end(session.id, worker)
            logger.warning("worker %d failed an offer: %s", worker.index, error or type(error).__name__)
            raise web.HTTPServiceUnavailable(text=f"streaming worker {worker.index} did not answer; try again") from None
        if response.status != 200:
            self.sessions.end(session.id, worker)
        return web.json_response(answer, status=response.status)

    async def healthz(self, _request: web.Request) -> web.Response:
        workers = [
            {"index": i, "pid": w.process.pid if w else None, "ready": w in self._ready_workers(), "sessions": self.sessions.on(w) if w else 0}
            for i, w in enumerate(self.workers)
        ]
        status = "ok" if all(w["ready"] for w in workers) else "degraded"
        return web.json_response({"status": status, "sessions": len(self.sessions), "max_sessions": self.config.max_sessions, "workers": workers})

    async def prometheus(self, _request: web.Request) -> web.Response:
        async def scrape(worker: WorkerHandle) -> str | None:
            try:
                async with self._http.get(
                    f"http://127.0.0.1:{worker.port}/metrics", headers={SECRET_HEADER: self._secret}, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
                ) as response:
                    return await response.text() if response.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                logger.warning("worker %d metrics unavailable: %s", worker.index, error or type(error).__name__)
                return None

        ready = self._ready_workers()
        texts = await asyncio.gather(*(scrape(w) for w in ready))
        merged = merge_expositions({str(w.index): text for w, text in zip(ready, texts) if text is not None})
        return web.Response(body=merged + generate_latest(self.front_metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})
