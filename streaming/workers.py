"""A sharded server's worker process: a ``StreamingServer`` on 127.0.0.1 that only its front calls.

The front (``front.py``) starts each worker with the "spawn" method, so no CUDA state is inherited,
and hands it asset paths and the store folder, never tensors. A pipe joins the two: the worker
sends ``("ready", port)`` once it listens and ``("ended", session id)`` whenever a session ends;
the front sends ``("forget", avatar id)`` when an avatar is deleted and ``("stop", None)`` to shut
it down. The worker also exits when the pipe closes, so a killed front leaves no worker behind.

Clients reach a worker directly only for media (ICE, DTLS, RTP, the pose channel); its HTTP routes
answer only requests that carry the front's per-run secret.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection

from aiohttp import web

from ..engine.formats import load_asset
from .avatar_store import UnknownAvatar
from .server import ASSIGNED_SESSION_ID, Avatar, ServerConfig, StreamingServer

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Splatcast-Worker-Secret"
SESSION_HEADER = "X-Splatcast-Session"
"""The session id the front chose for a forwarded offer, so it can count the session before the
worker's answer (or its end notice) arrives."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, picklable: paths and settings only."""

    index: int
    avatar_paths: dict[str, str]
    default_avatar: str
    config: ServerConfig
    """The front's settings with ``store_dir`` set to the front's store and the per-address limit
    lifted: every request comes from the front's address, and the front enforces the limits."""
    secret: str
    log_level: int


class WorkerServer(StreamingServer):
    """A streaming server that takes offers from its front. The front owns the avatar store
    (uploads, reconstructions, recovery); a worker only reads it, loading an avatar that became
    ready after its start on the first offer for it."""

    def __init__(self, spec: WorkerSpec, notify) -> None:
        avatars = {aid: load_asset(path, spec.config.max_gaussians) for aid, path in spec.avatar_paths.items()}
        super().__init__(avatars, spec.config, spec.default_avatar)
        self.sessions.on_close = lambda session_id: notify(("ended", session_id))
        self._loading: dict[str, asyncio.Task] = {}
        """Avatars being loaded from the store: offers that come meanwhile wait for the same load."""

    async def _startup(self, _app: web.Application) -> None:
        """Nothing to recover: the front did, and runs the reconstruction jobs."""

    async def _offered_avatar(self, avatar_id: str | None) -> Avatar:
        """An avatar that became ready in the store after this worker started is loaded now."""
        if avatar_id is not None and avatar_id not in self.avatars:
            try:
                ready = self.store.get(avatar_id).status == "ready"
            except UnknownAvatar:
                ready = False
            if ready:
                if avatar_id not in self._loading:
                    self._loading[avatar_id] = asyncio.create_task(self._load(avatar_id))
                await asyncio.shield(self._loading[avatar_id])
        return self._avatar(avatar_id)

    async def _load(self, avatar_id: str) -> None:
        try:
            cloud = await asyncio.get_running_loop().run_in_executor(None, self.store.load, avatar_id)
            self._add_avatar(avatar_id, cloud)
        finally:
            del self._loading[avatar_id]


def front_only(secret: str):
    """Middleware: refuse any request without the front's secret; take the session id it chose."""

    @web.middleware
    async def check(request: web.Request, handler) -> web.StreamResponse:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), secret.encode()):
            raise web.HTTPForbidden(text="this is a splatcast worker; connect to its front")
        if SESSION_HEADER in request.headers:
            request[ASSIGNED_SESSION_ID] = request.headers[SESSION_HEADER]
        return await handler(request)

    return check


def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    """A worker process's entry point."""
    # Ctrl-C in a terminal reaches the whole process group; the front stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=spec.log_level, format=f"worker {spec.index}: %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.WARNING)
    asyncio.run(_serve(spec, conn))


async def _serve(spec: WorkerSpec, conn: Connection) -> None:
    def notify(message: tuple) -> None:
        try:
            conn.send(message)
        except OSError:  # the front is gone; the pipe's end stops this worker next
            pass

    server = WorkerServer(spec, notify)
    app = server.app()
    app.middlewares.append(front_only(spec.secret))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    forgetting: set[asyncio.Task] = set()

    def on_message() -> None:
        try:
            kind, value = conn.recv()
        except (EOFError, OSError):  # the front closed the pipe or died
            kind = "stop"
        if kind == "stop":
            loop.remove_reader(conn.fileno())
            stop.set()
        elif kind == "forget":
            task = asyncio.create_task(server._forget_avatar(value))
            forgetting.add(task)
            task.add_done_callback(forgetting.discard)

    loop.add_reader(conn.fileno(), on_message)
    notify(("ready", runner.addresses[0][1]))
    logger.info("listening on 127.0.0.1:%d", runner.addresses[0][1])
    await stop.wait()
    await runner.cleanup()
