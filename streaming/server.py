"""The HTTP + WebRTC front door: web client, ``POST /offer``, ``GET /scene``, ``GET /healthz``.

Routes: ``GET /`` (web client), ``/static/*``, ``POST /offer``, ``GET /scene``, ``GET /healthz``,
``GET /metrics`` (Prometheus), ``GET /openapi.json`` and the avatar API (``api.py``). One aiohttp
application holds the avatars, the sessions and the render loop. Rendering and encoding run on
worker threads so the event loop stays free for RTP, RTCP and pose messages.
With ``ServerConfig.workers`` > 1, ``create_app`` returns a front that shards sessions over that
many such servers in worker processes (``front.py``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from importlib import resources

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.sdp import SessionDescription

from ..config import usable_cpu_count
from ..engine.cameras import Views, frame_bounds, intrinsics_from_fov, orbit_camera, single_view
from ..engine.gaussians import GaussianCloud
from .api import AvatarAPI
from .auth import Authority, ViewerToken
from .avatar_store import AvatarStore
from .feedback import forward_feedback
from .frames import FrameRenderer
from .http_errors import json_errors
from .ice import IceServers, TurnBackoff
from .jobs import Reconstruct, ReconstructionQueue, load_learned_pipeline, reconstruct_uploaded_photo
from .metrics import StreamMetrics
from .openapi import openapi_spec
from .protocol import SizeLimits
from .render_loop import RenderLoop
from .session import Session, SessionLimitError, SessionManager, new_session_id
from .track import AvatarTrack, checked_late_start

logger = logging.getLogger(__name__)

MAX_SDP_BYTES = 64 * 1024
SERVER_KEY = web.AppKey("server", "StreamingServer")
ASSIGNED_SESSION_ID = web.RequestKey("assigned_session_id", str)
"""The session id a sharded server's front chose for this offer (set only on trusted requests)."""
DEFAULT_FOV_DEG = 40.0
"""Vertical field of view of the view streamed before a client's first pose."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    fps: int = 60
    width: int = 640
    height: int = 480
    max_width: int = 1920
    max_height: int = 1080
    max_sessions: int = 8
    idle_timeout: float = 30.0
    bitrate_bounds: tuple[int, int, int] = (300_000, 3_000_000, 12_000_000)
    """(min, start, max) bits per second; within them the bitrate follows the receiver's REMB."""
    encoder_threads: int = 0
    """Threads of each session's encoder (libx264: one slice each); 0: the session's share of
    the cores when ``max_sessions`` stream, at least one. More threads cut one frame's encode
    time but cost more CPU per frame, which a full server cannot spare."""
    background: tuple[float, float, float] = (0.08, 0.08, 0.1)
    ice_servers: list[str] = field(default_factory=list)
    """STUN/TURN URLs (``stun:host:port``, ``turn:host:port?transport=tcp``). Empty by default:
    aiortc would otherwise ask a public STUN server. aiortc uses the first of each kind."""
    turn_username: str | None = None
    turn_credential: str | None = None
    """Long-term TURN credentials, for the server's own connections (``ice``)."""
    turn_secret: str | None = None
    """A secret shared with the TURN server, from which expiring credentials are minted for the
    server and for viewers (``ice``); the alternative to ``turn_username``/``turn_credential``."""
    checkpoints: str | None = None
    """Weights of the learned reconstruction; None: photos go through the weight-free path."""
    engine: str | None = None
    """The learned reconstruction's engine (eager, torch, tensorrt); None: torch on a CUDA GPU, else eager."""
    engine_cache: str | None = None
    """Folder of built engines; None: the one ``splatcast export`` fills (~/.cache/splatcast/engines)."""
    store_dir: str | None = None
    """Where uploaded and reconstructed avatars live; None: a temporary folder for this run."""
    api_key: str | None = None
    """Turns security on: management calls need it, viewers need tokens minted with it."""
    max_upload_bytes: int = 64 * 2**20
    max_image_pixels: int = 40_000_000
    max_gaussians: int = 2_000_000
    max_pending_jobs: int = 8
    sessions_per_token: int = 2
    sessions_per_address: int = 8
    workers: int = 1
    """Processes that host sessions; 1: this process. More spread the per-session network work
    (aiortc's RTP, SRTP, SCTP in Python) over that many event loops sharing the GPU."""
    late_start: float = 0.0
    """Fraction of a frame interval (at most 1/4) by which a session's frame may start after its
    slot while its previous frame is still out; 0 skips the slot at once. A frame that misses its
    slot by a little then goes out late instead of a whole interval later."""
    switch_interval_ms: float = 0.0
    """Python's thread switch interval in each process hosting sessions (``sys.setswitchinterval``);
    0 leaves the interpreter's own (5 ms by default). A render or encode thread back from C code
    waits for the GIL until the busy event loop yields it or this interval ends."""

    def __post_init__(self) -> None:
        # At start-up, not at each session's offer, where they would fail every viewer.
        checked_late_start(self.late_start)
        self.ice()

    def ice(self) -> IceServers:
        return IceServers(tuple(self.ice_servers), self.turn_username, self.turn_credential, self.turn_secret)

    def session_encoder_threads(self) -> int:
        return self.encoder_threads or max(1, usable_cpu_count() // self.max_sessions)


@dataclass(frozen=True, eq=False)
class Avatar:
    """A servable avatar: its Gaussians and default orbit. Its renderer (the Gaussians on the
    render device) is made on first use, so a sharded server's front never touches the GPU."""

    id: str
    cloud: GaussianCloud
    background: tuple[float, float, float]
    centre: tuple[float, float, float]
    radius: float

    @classmethod
    def from_cloud(cls, avatar_id: str, cloud: GaussianCloud, background: tuple[float, float, float]) -> Avatar:
        centre, radius = frame_bounds(*cloud.bounds(), DEFAULT_FOV_DEG)
        return cls(avatar_id, cloud, background, centre, radius)

    @functools.cached_property
    def renderer(self) -> FrameRenderer:
        return FrameRenderer(self.cloud, self.background)

    def default_views(self, width: int, height: int) -> Views:
        camera_to_world = orbit_camera(0.0, 0.0, self.radius, self.centre)
        return single_view(camera_to_world, intrinsics_from_fov(DEFAULT_FOV_DEG, width, height), width, height)


class AccessLogger(AbstractAccessLogger):
    """Access log without query strings: a viewer page's URL may carry its token (``?token=``),
    and tokens never go into logs."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %.1f ms', request.remote, request.method, request.path, response.status, time * 1e3)


def negotiated_video_codec(sdp: str) -> str | None:
    """The mime type of the first video codec of an answer: the one its sender will use."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "video" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType
    return None


def preferred_video_codecs():
    """H.264 first (hardware decoders everywhere, NVENC where the server has it), VP8 as fallback."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    rank = {"video/h264": 0, "video/vp8": 1, "video/rtx": 2}
    return sorted((c for c in codecs if c.mimeType.lower() in rank), key=lambda c: rank[c.mimeType.lower()])


class StreamingServer:
    def __init__(
        self,
        avatars: dict[str, GaussianCloud],
        config: ServerConfig,
        default_avatar: str | None = None,
        reconstruct: Reconstruct | None = None,
    ) -> None:
        """``avatars`` are served as given; more come from the store (uploads, reconstructions).
        ``reconstruct`` turns an uploaded photo into an avatar (default: the engine's pipeline)."""
        if not avatars:
            raise ValueError("the server needs at least one avatar")
        self.config = config
        self.limits = SizeLimits(config.max_width, config.max_height)
        self.default_size = self.limits.clamp(config.width, config.height)
        """The view size before a client's first pose: even and within the limits, as a pose's is."""
        self.avatars = {aid: Avatar.from_cloud(aid, cloud, config.background) for aid, cloud in avatars.items()}
        self.default_avatar = default_avatar or next(iter(self.avatars))
        self._scratch = None if config.store_dir else tempfile.TemporaryDirectory(prefix="splatcast-avatars-")
        self.store = AvatarStore(config.store_dir or self._scratch.name, config.max_gaussians)
        self.authority = Authority(config.api_key)
        self.ice = config.ice()
        self.turn_backoff = TurnBackoff()
        logger.info("ICE servers: %s", self.ice)
        prepare = None
        if reconstruct is None:
            options = {"checkpoints": config.checkpoints, "engine": config.engine, "engine_cache": config.engine_cache}
            reconstruct = functools.partial(reconstruct_uploaded_photo, **options)
            if config.checkpoints:  # load the weights and engines now, not on the first upload
                prepare = functools.partial(load_learned_pipeline, **options)
        self.jobs = ReconstructionQueue(self.store, reconstruct, self._add_avatar, config.max_pending_jobs, prepare=prepare)
        self.api = AvatarAPI(self.store, self.jobs, self.authority, config.max_image_pixels, self._add_avatar, self._forget_avatar)
        self._host_sessions()

    def _host_sessions(self) -> None:
        """What sessions streamed from this process need: their book, metrics and render loop;
        and each avatar's renderer compiled and cached now, not on some viewer's first frame."""
        config = self.config
        if config.switch_interval_ms:
            sys.setswitchinterval(config.switch_interval_ms / 1e3)
        self.sessions = SessionManager(config.max_sessions, config.idle_timeout, config.sessions_per_token, config.sessions_per_address)
        self.metrics = StreamMetrics(lambda: ((sid, s.track) for sid, s in self.sessions.sessions.items()))
        self.render_loop = RenderLoop(self.metrics)
        self._warm_avatars: weakref.WeakSet[Avatar] = weakref.WeakSet()
        for avatar in self.avatars.values():
            self._warm_up_avatar(avatar)

    def _warm_up_avatar(self, avatar: Avatar) -> None:
        avatar.renderer.render(avatar.default_views(*self.default_size))
        self._warm_avatars.add(avatar)

    async def _renderer(self, avatar: Avatar) -> FrameRenderer:
        """The avatar's renderer; one that came after the start (an upload, a reconstruction) is
        made and warmed up on the render thread: moving its Gaussians to the GPU and capturing
        its first frame on the event loop would stall every session's RTP."""
        if avatar not in self._warm_avatars:
            await self.render_loop.on_render_thread(self._warm_up_avatar, avatar)
        return avatar.renderer

    async def _stop_sessions(self) -> None:
        await self.sessions.close_all()
        self.render_loop.shutdown()

    def _add_avatar(self, avatar_id: str, cloud: GaussianCloud) -> None:
        self.avatars[avatar_id] = Avatar.from_cloud(avatar_id, cloud, self.config.background)

    async def _forget_avatar(self, avatar_id: str) -> None:
        """An avatar is being deleted: end its sessions and drop it from memory."""
        for session in list(self.sessions.sessions.values()):
            if session.avatar_id == avatar_id:
                await self.sessions.close(session.id, "avatar deleted")
        self.avatars.pop(avatar_id, None)

    async def _startup(self, _app: web.Application) -> None:
        self.jobs.start()
        ready, requeue = await asyncio.get_running_loop().run_in_executor(None, self.store.recover)
        for record in ready:
            self._add_avatar(record.id, self.store.load(record.id))
        for record in requeue:
            self.jobs.submit(record)
        logger.info("avatar store %s: %d ready, %d jobs resumed", self.store.root, len(ready), len(requeue))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_upload_bytes, middlewares=[json_errors])
        web_root = resources.files("splatcast.streaming") / "web"
        async def serve_index(_request: web.Request) -> web.FileResponse:
            return web.FileResponse(str(web_root / "index.html"))

        app.router.add_get("/", serve_index)
        app.router.add_static("/static/", str(web_root))
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/scene", self.scene)
        app.router.add_post("/ice", self.ice_servers)
        app.router.add_post("/offer", self.offer)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/openapi.json", self.openapi)
        self.api.register(app)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app[SERVER_KEY] = self
        return app

    async def _shutdown(self, _app: web.Application) -> None:
        await self._stop_sessions()
        self.jobs.shutdown()
        if self._scratch is not None:
            self._scratch.cleanup()

    def _avatar(self, avatar_id: str | None) -> Avatar:
        avatar = self.avatars.get(avatar_id or self.default_avatar)
        if avatar is None:
            raise web.HTTPNotFound(text=f"unknown avatar {avatar_id!r}")
        return avatar

    async def _offered_avatar(self, avatar_id: str | None) -> Avatar:
        """The avatar an offer asks for (``_avatar``); a hook for servers that learn of avatars late."""
        return self._avatar(avatar_id)

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions), "max_sessions": self.config.max_sessions})

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(openapi_spec())

    async def prometheus(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": self.metrics.content_type})

    async def scene(self, request: web.Request) -> web.Response:
        avatar = self._avatar(request.query.get("avatar"))
        width, height = self.default_size
        return web.json_response(
            {"avatar": avatar.id, "centre": avatar.centre, "radius": avatar.radius, "width": width, "height": height, "fps": self.config.fps}
        )

    async def ice_servers(self, request: web.Request) -> web.Response:
        """The ICE servers a viewer's browser should use, TURN credentials minted for it: only for
        a viewer the server would admit, as they let their holder use the TURN server."""
        body = await _json_object(request, "{\"avatar\"?: <string>, \"token\"?: <string>}")
        avatar, viewer = await self._admitted_viewer(body)
        label = viewer.token_id if viewer is not None else new_session_id()
        return web.json_response(self.ice.for_viewer(f"{avatar.id}-{label}"))

    async def _admitted_viewer(self, body: dict) -> tuple[Avatar, ViewerToken | None]:
        """The avatar a request body names and its viewer token's claims (None with auth off);
        raises the HTTP error to answer for an unknown avatar or a token that does not admit it."""
        avatar_id = body.get("avatar")
        if avatar_id is not None and not isinstance(avatar_id, str):
            raise web.HTTPBadRequest(text="avatar must be a string id")
        avatar = await self._offered_avatar(avatar_id)
        return avatar, self.authority.check_viewer(body.get("token"), avatar.id)

    async def _admit_offer(self, request: web.Request) -> tuple[dict, Avatar, str | None]:
        """(offer body, avatar, viewer token id) of an offer that passes validation, auth and the
        session limits; raises the HTTP error to answer otherwise."""
        body = await _json_object(request, "{\"sdp\": <string>, \"type\": \"offer\"}")
        if not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
            raise web.HTTPBadRequest(text="body must be {\"sdp\": <string>, \"type\": \"offer\"}")
        if len(body["sdp"]) > MAX_SDP_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_SDP_BYTES, len(body["sdp"]), text=f"SDP larger than {MAX_SDP_BYTES} bytes")
        avatar, viewer = await self._admitted_viewer(body)
        token_id = viewer.token_id if viewer is not None else None
        self.sessions.reserve(token_id, request.remote)
        return body, avatar, token_id

    async def offer(self, request: web.Request) -> web.Response:
        body, avatar, token_id = await self._admit_offer(request)
        renderer = await self._renderer(avatar)
        use_turn = bool(self.ice.turn_urls) and self.turn_backoff.allows()
        pc = RTCPeerConnection(self.ice.for_server(turn=use_turn))
        track = AvatarTrack(
            avatar.default_views(*self.default_size), self.config.fps, self.config.bitrate_bounds, self.config.session_encoder_threads(),
            late_start=self.config.late_start,
        )
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(preferred_video_codecs())
        forward_feedback(transceiver.sender, track)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
            answer = await pc.createAnswer()
            track.codec_mime = negotiated_video_codec(answer.sdp)
            if track.codec_mime is None:
                raise ValueError("the offer has no video m-line that can receive H.264 or VP8")
            await pc.setLocalDescription(answer)
        except Exception as error:  # aiortc reports malformed SDP with assorted exception types
            await pc.close()
            raise web.HTTPBadRequest(text=f"bad SDP offer: {error}") from None

        session_id = request.get(ASSIGNED_SESSION_ID) or new_session_id()
        if use_turn:  # aioice drops a refused or timed-out allocation silently
            relayed = " typ relay " in pc.localDescription.sdp
            self.turn_backoff.record(relayed)
            if not relayed:
                self.metrics.no_relay.inc()
                logger.warning("session %s: the TURN server gave no relay candidate (credentials refused, or the server unreachable); "
                               "the sessions of the next %g s go without TURN", session_id, self.turn_backoff.retry_s)
        session = Session(pc, track, avatar.id, self.limits, self.metrics, token_id=token_id, address=request.remote, id=session_id)
        track.on_frame = session.on_frame
        pc.on("datachannel", lambda channel: session.attach_channel(channel) if channel.label == "pose" else None)
        try:
            self.sessions.add(session)
        except SessionLimitError:  # another offer took the last slot meanwhile
            await pc.close()
            raise
        self.render_loop.add(track, renderer)
        logger.info("session %s: avatar %s, codec %s", session.id, avatar.id, track.codec_mime)
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": session.id})


async def _json_object(request: web.Request, shape: str) -> dict:
    """The request's JSON object body; 400, naming ``shape``, for anything else."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=f"body must be JSON: {shape}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=f"body must be {shape}")
    return body


def create_app(
    avatars: dict[str, GaussianCloud],
    config: ServerConfig | None = None,
    default_avatar: str | None = None,
    reconstruct: Reconstruct | None = None,
) -> web.Application:
    config = config or ServerConfig()
    if config.workers > 1:
        from .front import ShardedServer  # imports this module

        return ShardedServer(avatars, config, default_avatar, reconstruct).app()
    return StreamingServer(avatars, config, default_avatar, reconstruct).app()
