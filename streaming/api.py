"""The avatar management API: upload a photo or a Gaussian asset, follow its reconstruction,
download it, delete it, and mint viewer tokens.

    POST   /avatars                 photo (JPEG/PNG/WebP...) -> 202 + job; .ply/.splat -> 201 ready
    GET    /avatars                 every avatar's record
    GET    /avatars/{id}            queued | running (with stage) | ready | failed (with reason)
    GET    /avatars/{id}/ply        the Gaussian asset (INRIA PLY)
    DELETE /avatars/{id}            204; its viewers are disconnected
    POST   /avatars/{id}/tokens     {"token", "expires"} for /offer (when auth is on)

Bodies are raw (``Content-Type`` of the file) or multipart with one file part.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable

from aiohttp import BodyPartReader, web
from PIL import Image, UnidentifiedImageError

from ..engine.formats import AssetError
from ..engine.gaussians import GaussianCloud
from .auth import Authority, AuthError
from .avatar_store import AvatarStore, UnknownAvatar
from .http_errors import error_response
from .jobs import QueueFull, ReconstructionQueue

PLY_MAGIC = b"ply"
SPLAT_TYPES = {"application/x-splat", "model/x-splat"}


class AvatarAPI:
    def __init__(self, store: AvatarStore, jobs: ReconstructionQueue, authority: Authority, max_image_pixels: int,
                 on_ready: Callable[[str, GaussianCloud], None], on_delete: Callable[[str], Awaitable[None]]) -> None:
        self.store = store
        self.jobs = jobs
        self.authority = authority
        self.max_image_pixels = max_image_pixels
        self.on_ready = on_ready
        self.on_delete = on_delete

    def register(self, app: web.Application) -> None:
        app.router.add_post("/avatars", self.upload)
        app.router.add_get("/avatars", self.list)
        app.router.add_get("/avatars/{id}", self.status)
        app.router.add_get("/avatars/{id}/ply", self.download)
        app.router.add_delete("/avatars/{id}", self.delete)
        app.router.add_post("/avatars/{id}/tokens", self.token)

    def _manager(self, request: web.Request) -> None:
        try:
            self.authority.check_manager(request.headers.get("Authorization"))
        except AuthError as error:
            raise web.HTTPUnauthorized(text=str(error)) from None

    def _record(self, request: web.Request):
        try:
            return self.store.get(request.match_info["id"])
        except UnknownAvatar:
            raise web.HTTPNotFound(text="no such avatar") from None

    async def _body(self, request: web.Request) -> tuple[str, str, bytes]:
        """(file name, content type, bytes) of a raw or single-part multipart upload."""
        if request.content_type.startswith("multipart/"):
            try:
                reader = await request.multipart()
                part = await reader.next()
                if isinstance(part, BodyPartReader):
                    return part.filename or "", part.headers.get("Content-Type", ""), bytes(await part.read())
            except web.HTTPException:
                raise  # 413 for a body over the limit
            except Exception as error:  # aiohttp's parser fails a malformed body in many ways (Value/Runtime/TypeError ...)
                raise web.HTTPBadRequest(text=f"malformed multipart body: {error}") from None
            raise web.HTTPBadRequest(text="multipart upload has no file part")
        return request.query.get("filename", ""), request.content_type, await request.read()

    def _asset_suffix(self, name: str, content_type: str, data: bytes) -> str | None:
        if data.startswith(PLY_MAGIC):
            return ".ply"
        if name.lower().endswith(".splat") or content_type in SPLAT_TYPES:
            return ".splat"
        return None

    def _photo_suffix(self, data: bytes) -> str:
        try:
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height, kind = image.width, image.height, (image.format or "img").lower()
        except (UnidentifiedImageError, OSError, ValueError):
            raise web.HTTPUnsupportedMediaType(
                text="expected a photo (JPEG, PNG, WebP, ...) or a Gaussian asset (.ply, .splat)",
            ) from None
        if width * height > self.max_image_pixels:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.max_image_pixels, actual_size=width * height,
                text=f"photo of {width}x{height} exceeds {self.max_image_pixels:,} pixels",
            )
        return f".{kind}"

    async def upload(self, request: web.Request) -> web.Response:
        self._manager(request)
        name, content_type, data = await self._body(request)
        if not data:
            return error_response(400, "empty upload")
        suffix = self._asset_suffix(name, content_type, data)
        if suffix is not None:
            record = self.store.create(f"upload{suffix}", data, "running")
            loop = asyncio.get_running_loop()
            try:
                cloud = await loop.run_in_executor(None, self.store.load_source, record)
                await loop.run_in_executor(None, self.store.finish, record, cloud)
            except AssetError as error:
                self.store.delete(record.id)
                return error_response(400, f"not a usable Gaussian asset: {str(error).split(': ', 1)[-1]}")
            self.on_ready(record.id, cloud)
            return web.json_response(self.store.get(record.id).public(), status=201)
        suffix = self._photo_suffix(data)
        try:
            self.jobs.check_room()
        except QueueFull as error:
            return error_response(429, str(error))
        record = self.store.create(f"photo{suffix}", data, "queued")
        self.jobs.submit(record)
        return web.json_response(record.public() | {"job": f"/avatars/{record.id}"}, status=202)

    async def list(self, request: web.Request) -> web.Response:
        self._manager(request)
        return web.json_response([r.public() for r in self.store.records()])

    async def status(self, request: web.Request) -> web.Response:
        self._manager(request)
        return web.json_response(self._record(request).public())

    async def download(self, request: web.Request) -> web.StreamResponse:
        self._manager(request)
        record = self._record(request)
        if record.status != "ready":
            return error_response(409, f"avatar is {record.status}, not ready")
        return web.FileResponse(self.store.asset_path(record.id), headers={"Content-Type": "application/octet-stream",
                                "Content-Disposition": f'attachment; filename="{record.id}.ply"'})

    async def delete(self, request: web.Request) -> web.Response:
        self._manager(request)
        record = self._record(request)
        await self.on_delete(record.id)
        self.store.delete(record.id)
        return web.Response(status=204)

    async def token(self, request: web.Request) -> web.Response:
        self._manager(request)
        record = self._record(request)
        if record.status != "ready":
            return error_response(409, f"avatar is {record.status}, not ready")
        token, expires = self.authority.mint(record.id)
        return web.json_response({"token": token, "expires": expires, "avatar": record.id})
