"""The avatar service API: uploads, status, downloads, deletion, tokens, limits, persistence."""

import asyncio
import io
import logging
import time

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from splatcast.engine.formats import load_asset, save_asset
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app
from splatcast.streaming.viewer import Viewer

from .test_streaming import figure_cloud

API_KEY = "test-key-7f3a"
MANAGER = {"Authorization": f"Bearer {API_KEY}"}


def asset_bytes(tmp_path, suffix=".ply", n=800) -> bytes:
    path = tmp_path / f"a{suffix}"
    save_asset(figure_cloud(n), path)
    return path.read_bytes()


async def start(tmp_path, reconstruct=None, **overrides) -> TestServer:
    config = ServerConfig(**{"fps": 15, "width": 96, "height": 64, "store_dir": str(tmp_path / "store"), "api_key": API_KEY} | overrides)
    server = TestServer(create_app({"sample": figure_cloud(500)}, config, reconstruct=reconstruct), host="127.0.0.1")
    await server.start_server()
    return server


def url(server, path="") -> str:
    return str(server.make_url(path))


async def upload(http, server, data: bytes, headers=MANAGER, **params):
    async with http.post(url(server, "/avatars"), data=data, headers=headers, params=params) as r:
        return r.status, await r.json()


async def test_asset_upload_is_ready_listed_downloadable_and_deletable(tmp_path):
    server = await start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            status, record = await upload(http, server, asset_bytes(tmp_path))
            assert status == 201 and record["status"] == "ready" and record["gaussians"] == 800
            async with http.get(url(server, f"/avatars/{record['id']}"), headers=MANAGER) as r:
                assert (await r.json())["status"] == "ready"
            async with http.get(url(server, "/avatars"), headers=MANAGER) as r:
                assert [a["id"] for a in await r.json()] == [record["id"]]
            async with http.get(url(server, f"/avatars/{record['id']}/ply"), headers=MANAGER) as r:
                assert r.status == 200
                (tmp_path / "down.ply").write_bytes(await r.read())
            assert len(load_asset(tmp_path / "down.ply")) == 800
            status, splat = await upload(http, server, asset_bytes(tmp_path, ".splat"), filename="x.splat")
            assert status == 201 and splat["gaussians"] == 800
            async with http.delete(url(server, f"/avatars/{record['id']}"), headers=MANAGER) as r:
                assert r.status == 204
            async with http.get(url(server, f"/avatars/{record['id']}"), headers=MANAGER) as r:
                assert r.status == 404
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("body", "status", "complaint"),
    [
        (b"", 400, "empty"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n", 400, "ASCII"),
        (b"GIF89a not really", 415, "expected a photo"),
        (b"just some bytes", 415, "expected a photo"),
    ],
)
async def test_bad_uploads_get_clear_errors_and_leave_nothing_behind(tmp_path, body, status, complaint):
    server = await start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            got, answer = await upload(http, server, body)
            assert got == status and complaint in answer["error"]
            async with http.get(url(server, "/avatars"), headers=MANAGER) as r:
                assert await r.json() == []
    finally:
        await server.close()


async def test_limits_on_body_size_image_size_and_gaussian_count(tmp_path):
    from PIL import Image

    server = await start(tmp_path, max_upload_bytes=200_000, max_image_pixels=10_000, max_gaussians=500)
    try:
        async with aiohttp.ClientSession() as http:
            assert (await upload(http, server, b"\0" * 300_000))[0] == 413
            big = io.BytesIO()
            Image.new("RGB", (200, 100)).save(big, format="PNG")
            status, answer = await upload(http, server, big.getvalue())
            assert status == 413 and "exceeds" in answer["error"]
            status, answer = await upload(http, server, asset_bytes(tmp_path, n=800))
            assert status == 400 and "limit" in answer["error"]
    finally:
        await server.close()


async def test_management_needs_the_api_key(tmp_path):
    server = await start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
                assert (await upload(http, server, asset_bytes(tmp_path), headers=headers))[0] == 401
                async with http.get(url(server, "/avatars"), headers=headers) as r:
                    assert r.status == 401
    finally:
        await server.close()


async def test_ids_are_validated_so_paths_cannot_escape_the_store(tmp_path):
    server = await start(tmp_path)
    sentinel = tmp_path / "meta.json"
    sentinel.write_text("{}")
    try:
        async with aiohttp.ClientSession() as http:
            for bad in ("..%2F..%2Fetc", "..", "0123456789abcdeg", "ABCDEF0123456789", "%2e%2e", "0123456789abcdef0"):
                async with http.get(url(server, f"/avatars/{bad}"), headers=MANAGER) as r:
                    # Dot segments are resolved before routing; what is left never reaches a file.
                    assert r.status == 404 or r.content_type == "text/html", r.status
                async with http.delete(url(server, f"/avatars/{bad}"), headers=MANAGER) as r:
                    assert r.status in (404, 405)  # 405: aiohttp normalised the path to "/"
        assert sentinel.exists() and (tmp_path / "store").exists()
    finally:
        await server.close()


async def test_viewer_tokens_admit_only_their_avatar_until_they_expire(tmp_path):
    server = await start(tmp_path)
    srv = server.app[SERVER_KEY]
    base = url(server).rstrip("/")
    try:
        async with aiohttp.ClientSession() as http:
            _, first = await upload(http, server, asset_bytes(tmp_path))
            _, second = await upload(http, server, asset_bytes(tmp_path))
            async with http.post(url(server, f"/avatars/{first['id']}/tokens"), headers=MANAGER) as r:
                token = (await r.json())["token"]
        for avatar, tok, expected in [
            (first["id"], None, "401"),
            (first["id"], token + "x", "401"),
            (first["id"], "a.b", "401"),
            (second["id"], token, "403"),
        ]:
            viewer = Viewer()
            with pytest.raises(RuntimeError, match=expected):
                await viewer.connect(base, avatar=avatar, token=tok)
            await viewer.close()
        expired, _ = srv.authority.mint(first["id"], ttl_s=-1)
        viewer = Viewer()
        with pytest.raises(RuntimeError, match="401.*expired"):
            await viewer.connect(base, avatar=first["id"], token=expired)
        await viewer.close()
        # A good token streams its avatar, up to the per-token session limit.
        viewers = [Viewer(), Viewer()]
        for v in viewers:
            await v.connect(base, avatar=first["id"], token=token)
        extra = Viewer()
        with pytest.raises(RuntimeError, match="429"):
            await extra.connect(base, avatar=first["id"], token=token)
        await extra.close()
        frame = await viewers[0].track.recv()
        assert frame.width == 96
        for v in viewers:
            await v.close()
    finally:
        await server.close()


async def test_deleting_an_avatar_disconnects_its_viewers(tmp_path):
    server = await start(tmp_path, api_key=None)
    srv = server.app[SERVER_KEY]
    try:
        async with aiohttp.ClientSession() as http:
            _, record = await upload(http, server, asset_bytes(tmp_path), headers={})
            viewer = Viewer()
            await viewer.connect(url(server).rstrip("/"), avatar=record["id"])
            assert len(srv.sessions) == 1
            async with http.delete(url(server, f"/avatars/{record['id']}")) as r:
                assert r.status == 204
            assert len(srv.sessions) == 0
            await viewer.close()
    finally:
        await server.close()


async def test_ready_avatars_survive_a_restart(tmp_path):
    server = await start(tmp_path)
    async with aiohttp.ClientSession() as http:
        _, record = await upload(http, server, asset_bytes(tmp_path))
    await server.close()
    server = await start(tmp_path)
    try:
        assert record["id"] in server.app[SERVER_KEY].avatars
        async with aiohttp.ClientSession() as http, http.get(url(server, f"/scene?avatar={record['id']}")) as r:
            assert r.status == 200
    finally:
        await server.close()


async def test_openapi_spec_is_served_and_names_every_route(tmp_path):
    server = await start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http, http.get(url(server, "/openapi.json")) as r:
            spec = await r.json()
        assert spec["openapi"].startswith("3.")
        for path in ("/offer", "/avatars", "/avatars/{id}", "/avatars/{id}/ply", "/avatars/{id}/tokens", "/healthz", "/scene"):
            assert path in spec["paths"]
    finally:
        await server.close()


def astronaut_png(side: int = 256) -> bytes:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


async def wait_for_status(http, server, avatar_id: str, wanted: set[str], timeout: float = 240.0) -> dict:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(url(server, f"/avatars/{avatar_id}"), headers=MANAGER) as r:
            record = await r.json()
        if not seen or seen[-1] != (record["status"], record["stage"]):
            seen.append((record["status"], record["stage"]))
        if record["status"] in wanted:
            record["seen"] = seen
            return record
        await asyncio.sleep(0.2)
    raise TimeoutError(f"avatar {avatar_id} stayed {seen[-1]}")


async def reconstructed(http, server, photo: bytes | None = None) -> dict:
    """Upload ``photo`` (default: the astronaut) and wait for its job: the avatar's final record."""
    _, record = await upload(http, server, photo or astronaut_png())
    return await wait_for_status(http, server, record["id"], {"ready", "failed"})


async def test_photo_upload_is_reconstructed_in_the_background_and_streams(tmp_path):
    server = await start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            status, record = await upload(http, server, astronaut_png())
            assert status == 202 and record["status"] == "queued" and record["job"] == f"/avatars/{record['id']}"
            done = await wait_for_status(http, server, record["id"], {"ready", "failed"})
            assert done["status"] == "ready", done
            assert any(state == "running" and stage for state, stage in done["seen"]), done["seen"]
            async with http.post(url(server, f"/avatars/{record['id']}/tokens"), headers=MANAGER) as r:
                token = (await r.json())["token"]
        viewer = Viewer()
        await viewer.connect(url(server).rstrip("/"), avatar=record["id"], token=token)
        assert (await asyncio.wait_for(viewer.track.recv(), 20)).width == 96
        await viewer.close()
    finally:
        await server.close()


async def test_photo_without_a_person_fails_with_a_reason(tmp_path):
    from PIL import Image

    server = await start(tmp_path)
    blank = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 200, 200)).save(blank, format="PNG")
    try:
        async with aiohttp.ClientSession() as http:
            status, record = await upload(http, server, blank.getvalue())
            assert status == 202
            done = await wait_for_status(http, server, record["id"], {"ready", "failed"})
            assert done["status"] == "failed" and done["reason"]
            async with http.get(url(server, f"/avatars/{record['id']}/ply"), headers=MANAGER) as r:
                assert r.status == 409
    finally:
        await server.close()


async def test_tokens_never_reach_the_access_log(tmp_path, caplog):

    from splatcast.streaming.server import AccessLogger

    app = create_app({"sample": figure_cloud(300)}, ServerConfig(width=64, height=48, store_dir=str(tmp_path / "s"), api_key=API_KEY))
    runner = web.AppRunner(app, access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    secret, _ = app[SERVER_KEY].authority.mint("sample")
    try:
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/?avatar=sample&token={secret}") as r:
                    assert r.status == 200
                async with http.post(f"http://127.0.0.1:{port}/offer", json={"sdp": "x", "type": "offer", "token": secret}) as r:
                    assert r.status in (400, 401, 403)
        assert any("GET /" in record.getMessage() for record in caplog.records)
        assert not any(secret in record.getMessage() or secret.split(".")[1] in record.getMessage() for record in caplog.records)
    finally:
        await runner.cleanup()
