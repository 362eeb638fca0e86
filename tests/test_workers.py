"""A sharded server (``workers=2``) over loopback: real worker processes, real aiortc viewers.

One server serves the whole module (a worker process takes seconds to start on a CPU); each test
leaves no viewer behind, and the test that kills a worker runs last.
"""

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer, unused_port

from splatcast.engine.formats import save_asset
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app
from splatcast.streaming.viewer import Viewer, pose_message

from .test_streaming import HEIGHT, WIDTH, figure_cloud, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
MAX_SESSIONS = 4


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sharded():
    config = ServerConfig(fps=30, width=WIDTH, height=HEIGHT, max_sessions=MAX_SESSIONS, workers=2)
    async with TestServer(create_app({"figure": figure_cloud()}, config), host="127.0.0.1") as test_server:
        yield test_server


def base_url(test_server) -> str:
    return str(test_server.make_url("")).rstrip("/")


async def get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.json()


async def connect(url: str, count: int, avatar: str | None = None) -> list[Viewer]:
    viewers = [Viewer() for _ in range(count)]
    for viewer in viewers:
        await viewer.connect(url, avatar=avatar)
    return viewers


async def sees_its_pose(viewer: Viewer, scene: dict, seq: int) -> bool:
    """The viewer's worker got a pose over the data channel and streamed a frame showing it."""
    message = pose_message(seq, 30.0, WIDTH, HEIGHT, scene["radius"], scene["centre"])
    for _ in range(3):  # the pose channel is unreliable, as for browsers
        viewer.channel.send(message)
    frame, info = await viewer.frame_for(seq)
    return info["seq"] == seq and (frame.width, frame.height) == (WIDTH, HEIGHT)


async def close(viewers: list[Viewer]) -> None:
    for viewer in viewers:
        await viewer.close()


async def test_sessions_spread_over_workers_and_stream(sharded):
    url = base_url(sharded)
    scene = await get_json(f"{url}/scene")
    viewers = await connect(url, 4)
    try:
        health = await get_json(f"{url}/healthz")
        assert health["status"] == "ok" and health["sessions"] == 4
        assert [w["sessions"] for w in health["workers"]] == [2, 2]
        for seq, viewer in enumerate(viewers, 1):
            assert await sees_its_pose(viewer, scene, seq)
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
            metrics = await response.text()
        assert 'splatcast_sessions{worker="0"} 2.0' in metrics and 'splatcast_sessions{worker="1"} 2.0' in metrics
        for viewer in viewers:
            assert f'session="{viewer.session_id}"' in metrics
    finally:
        await close(viewers)
    srv = sharded.app[SERVER_KEY]
    assert await wait_for(lambda: len(srv.sessions) == 0, 10.0), "the front still counts sessions its workers ended"


async def test_workers_answer_only_their_front(sharded):
    port = sharded.app[SERVER_KEY].workers[0].port
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}/offer", json={"sdp": "v=0", "type": "offer"}) as response:
            assert response.status == 403 and "front" in (await response.json())["error"]


async def test_global_session_limit_holds_across_workers(sharded):
    url = base_url(sharded)
    viewers = await connect(url, MAX_SESSIONS)
    extra = Viewer()
    try:
        with pytest.raises(RuntimeError, match=f"503.*limit of {MAX_SESSIONS} sessions"):
            await extra.connect(url)
        assert (await get_json(f"{url}/healthz"))["sessions"] == MAX_SESSIONS
    finally:
        await close([*viewers, extra])
    # The workers report the ends over their pipes: the next test starts from an empty count.
    srv = sharded.app[SERVER_KEY]
    assert await wait_for(lambda: len(srv.sessions) == 0, 10.0), "the front still counts sessions its workers ended"


async def test_worker_errors_are_relayed(sharded):
    url = base_url(sharded)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/offer", json={"sdp": "v=0\r\nnot sdp", "type": "offer"}) as response:
            assert response.status == 400 and "bad SDP offer" in (await response.json())["error"]
    assert (await get_json(f"{url}/healthz"))["sessions"] == 0


async def test_uploaded_avatar_streams_from_workers_and_deleting_it_ends_its_sessions(sharded, tmp_path):
    url = base_url(sharded)
    save_asset(figure_cloud(800, seed=1), tmp_path / "new.ply")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/avatars", data=(tmp_path / "new.ply").read_bytes()) as response:
            avatar = (await response.json())["id"]
        viewers = await connect(url, 2, avatar=avatar)  # one per worker: each loads it from the store
        try:
            scene = await get_json(f"{url}/scene?avatar={avatar}")
            for seq, viewer in enumerate(viewers, 1):
                assert await sees_its_pose(viewer, scene, seq)
            async with http.delete(f"{url}/avatars/{avatar}") as response:
                assert response.status == 204
            srv = sharded.app[SERVER_KEY]
            assert await wait_for(lambda: len(srv.sessions) == 0, 10.0), "sessions of a deleted avatar still counted"
        finally:
            await close(viewers)


async def test_killed_worker_frees_its_sessions_and_is_restarted(sharded):
    url = base_url(sharded)
    srv = sharded.app[SERVER_KEY]
    viewers = await connect(url, 2)
    try:
        victim = srv.workers[0].process.pid
        os.kill(victim, signal.SIGKILL)
        assert await wait_for(lambda: len(srv.sessions) == 1, 10.0), "the dead worker's session is still counted"
        assert await wait_for(lambda: len(srv._ready_workers()) == 2, 120.0), "the worker was not restarted"
        health = await get_json(f"{url}/healthz")
        assert health["status"] == "ok" and health["workers"][0]["pid"] != victim
        scene = await get_json(f"{url}/scene")
        replacement = await connect(url, 1)
        viewers += replacement
        assert srv.sessions.on(srv.workers[0]) == 1  # the new viewer went to the restarted worker
        assert await sees_its_pose(replacement[0], scene, 1)
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
            assert "splatcast_worker_restarts_total 1.0" in await response.text()
    finally:
        await close(viewers)


async def test_sigterm_stops_the_front_and_its_workers(tmp_path):
    port = unused_port()
    save_asset(figure_cloud(), tmp_path / "figure.ply")
    front = subprocess.Popen(
        [sys.executable, "-m", "splatcast.cli", "serve", "--avatar", str(tmp_path / "figure.ply"), "--port", str(port),
         "--width", str(WIDTH), "--height", str(HEIGHT), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        health = None
        for _ in range(600):
            try:
                health = await get_json(f"http://127.0.0.1:{port}/healthz")
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        assert health is not None and health["status"] == "ok"
        pids = [w["pid"] for w in health["workers"]]
        front.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(front.wait, 60) == 0
        assert not [pid for pid in pids if alive(pid)], "workers outlived their front"
    finally:
        front.kill()
        front.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_worker_loads_a_late_avatar_once_for_offers_that_come_together(tmp_path):
    """Offers for an avatar that became ready after the worker started share one load: their
    sessions share one renderer (one batch), not a copy of the avatar each."""
    from splatcast.streaming.avatar_store import AvatarStore
    from splatcast.streaming.workers import WorkerServer, WorkerSpec

    save_asset(figure_cloud(300), tmp_path / "first.ply")
    config = ServerConfig(fps=30, width=WIDTH, height=HEIGHT, store_dir=str(tmp_path / "store"))
    worker = WorkerServer(WorkerSpec(0, {"first": str(tmp_path / "first.ply")}, "first", config, "secret", 0), notify=lambda message: None)
    store = AvatarStore(tmp_path / "store", config.max_gaussians)  # the front's view of the same folder
    record = store.create("late.ply", b"", "processing")
    store.finish(record, figure_cloud(400, seed=2))
    avatars = await asyncio.gather(*(worker._offered_avatar(record.id) for _ in range(3)))
    assert all(avatar is avatars[0] for avatar in avatars) and len(avatars[0].cloud) == 400
    assert worker.avatars[record.id] is avatars[0]
