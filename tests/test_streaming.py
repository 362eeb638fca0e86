"""The whole path over loopback: a real aiortc viewer, the real server, decoded frames checked
against offline renders of the poses they name."""

import asyncio
import json
import math
import os
import subprocess
import sys

import aiohttp
import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestServer

from splatcast.engine.gaussians import GaussianCloud, rgb_to_sh0
from splatcast.kernels import reference
from splatcast.streaming.protocol import SizeLimits, parse_pose
from splatcast.streaming.render_loop import RenderLoop
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app

from splatcast.streaming.viewer import Viewer, pose_message

WIDTH, HEIGHT = 160, 120


def figure_cloud(n: int = 3000, seed: int = 0) -> GaussianCloud:
    """A small standing figure: a coloured ellipsoid body and a head, asymmetric so turns show."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    body = d[: n * 3 // 4] * torch.tensor([0.25, 0.6, 0.15]) + torch.tensor([0.0, 0.6, 0.0])
    head = d[n * 3 // 4 :] * 0.12 + torch.tensor([0.0, 1.35, 0.0])
    means = torch.cat([body, head])
    rgb = torch.stack([(means[:, 0] > 0).float() * 0.8 + 0.1, (means[:, 2] > 0).float() * 0.7 + 0.2, means[:, 1] / 1.5], 1)
    return GaussianCloud(
        means,
        torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        torch.full((n, 3), 0.03),
        torch.full((n,), 0.9),
        rgb_to_sh0(rgb.clamp(0, 1))[:, None],
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / max(mse, 1e-12))


@pytest.fixture
async def server():
    config = ServerConfig(fps=30, width=WIDTH, height=HEIGHT, max_sessions=2, idle_timeout=30.0, bitrate_bounds=(200_000, 2_000_000, 4_000_000))
    app = create_app({"figure": figure_cloud()}, config)
    async with TestServer(app, host="127.0.0.1") as test_server:
        yield test_server


def base_url(test_server) -> str:
    return str(test_server.make_url("")).rstrip("/")


async def wait_for(predicate, timeout: float) -> bool:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


async def test_viewer_sees_each_pose_rendered_and_session_ends_on_close(server):
    srv = server.app[SERVER_KEY]
    viewer = Viewer()
    await viewer.connect(base_url(server))
    assert len(srv.sessions) == 1
    avatar = srv.avatars["figure"]
    decoded = []
    for seq, azimuth in [(1, 0.0), (2, 120.0)]:
        message = pose_message(seq, azimuth, WIDTH, HEIGHT, avatar.radius, avatar.centre)
        for _ in range(3):  # the pose channel is lossy by design; clients repeat themselves
            viewer.channel.send(message)
        frame, info = await viewer.frame_for(seq)
        # Let the encoder refine a static view for a few frames, then compare like for like.
        for _ in range(5):
            viewer.channel.send(message)
        frame, info = await viewer.frame_for(seq)
        got = frame.to_ndarray(format="rgb24")
        pose = parse_pose(message, SizeLimits())
        offline = reference.to_uint8(reference.render(figure_cloud(), pose.views(), ServerConfig().background))[0].numpy()
        assert got.shape == (HEIGHT, WIDTH, 3)
        assert psnr(got, offline) >= 30.0, f"pose {seq}: PSNR {psnr(got, offline):.1f} dB"
        assert info["render_ms"] > 0 and info["encode_ms"] > 0
        decoded.append(got)
    assert psnr(decoded[0], decoded[1]) < 25.0, "the two poses should look different"
    await viewer.close()
    assert await wait_for(lambda: len(srv.sessions) == 0, 10.0), "session still held after the viewer closed"


async def test_bad_pose_messages_are_counted_and_streaming_continues(server):
    srv = server.app[SERVER_KEY]
    viewer = Viewer()
    await viewer.connect(base_url(server))
    avatar = srv.avatars["figure"]
    good = json.loads(pose_message(1, 30.0, WIDTH, HEIGHT, avatar.radius, avatar.centre))
    nan_pose = dict(good, seq=2, views=[{"matrix": [float("nan")] * 16, "projection": good["views"][0]["projection"]}])
    bad = [
        "not json",
        json.dumps({"v": 2, "type": "pose"}),
        json.dumps(nan_pose),
        json.dumps(dict(good, seq=3, views=[])),
        json.dumps(dict(good, seq=4, width="wide")),
        "x" * 10_000,
        json.dumps(dict(good, seq=5, views=[{"matrix": [2.0] * 16, "projection": good["views"][0]["projection"]}])),
    ]
    for message in bad:
        viewer.channel.send(message)
    # The channel is lossy by design (clients repeat their pose): send the good one a few times.
    for _ in range(5):
        viewer.channel.send(json.dumps(dict(good, seq=6)))
        await asyncio.sleep(0.05)
    frame, _ = await viewer.frame_for(6)
    assert frame.width == WIDTH
    session = next(iter(srv.sessions.sessions.values()))
    assert session.flooded_poses == 0, "a burst on a fresh channel is not a flood"
    assert session.bad_poses == len(bad)
    async with aiohttp.ClientSession() as http, http.get(f"{base_url(server)}/metrics") as r:
        exposition = await r.text()
    assert f"splatcast_bad_pose_messages_total {len(bad)}.0" in exposition
    assert "splatcast_sessions 1.0" in exposition
    assert f'splatcast_frames_total{{session="{session.id}"}}' in exposition
    assert "splatcast_pose_to_encoded_seconds_count 1.0" in exposition
    await viewer.close()


async def test_stereo_pose_streams_side_by_side(server):
    srv = server.app[SERVER_KEY]
    viewer = Viewer()
    await viewer.connect(base_url(server))
    avatar = srv.avatars["figure"]
    for _ in range(3):  # lossy channel: repeat, as clients do
        viewer.channel.send(pose_message(1, 10.0, WIDTH, HEIGHT, avatar.radius, avatar.centre, views=2))
    frame, _ = await viewer.frame_for(1)
    assert (frame.width, frame.height) == (2 * WIDTH, HEIGHT)
    await viewer.close()


async def test_http_errors(server):
    url = base_url(server)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/offer", data="{nope") as r:
            assert r.status == 400 and "JSON" in (await r.json())["error"]
        async with http.post(f"{url}/offer", json={"sdp": "v=0\r\nthis is not sdp", "type": "offer"}) as r:
            assert r.status == 400 and "SDP" in (await r.json())["error"]
        async with http.post(f"{url}/offer", json={"sdp": 5, "type": "offer"}) as r:
            assert r.status == 400
        viewer = Viewer()
        with pytest.raises(RuntimeError, match="404"):
            await viewer.connect(url, avatar="nobody")
        await viewer.close()
        async with http.get(f"{url}/healthz") as r:
            assert (await r.json()) == {"status": "ok", "sessions": 0, "max_sessions": 2}
        async with http.get(f"{url}/scene") as r:
            scene = await r.json()
            assert scene["avatar"] == "figure" and scene["radius"] > 0


async def test_session_limit_answers_503_and_frees_up(server):
    srv = server.app[SERVER_KEY]
    viewers = [Viewer(), Viewer()]
    for v in viewers:
        await v.connect(base_url(server))
    extra = Viewer()
    with pytest.raises(RuntimeError, match="503.*limit"):
        await extra.connect(base_url(server))
    await extra.close()
    await viewers[0].close()
    assert await wait_for(lambda: len(srv.sessions) == 1, 10.0)
    again = Viewer()
    await again.connect(base_url(server))
    for v in (viewers[1], again):
        await v.close()


async def test_vanished_viewer_is_reaped_after_idle_timeout(server):
    srv = server.app[SERVER_KEY]
    srv.sessions.idle_timeout = 2.0
    viewer = Viewer()
    await viewer.connect(base_url(server))
    # Vanish without closing: stop answering (no pose, no ICE) by tearing down the transport only.
    await viewer.pc.getTransceivers()[0].receiver.transport.transport.stop()
    assert await wait_for(lambda: len(srv.sessions) == 0, srv.sessions.idle_timeout + 8)
    await viewer.close()


async def streaming_viewer(server, frames: int = 10):
    """A connected viewer, its server-side session and the server's sender SSRC, once
    ``frames`` frames have gone out."""
    viewer = Viewer()
    await viewer.connect(base_url(server))
    session = next(iter(server.app[SERVER_KEY].sessions.sessions.values()))
    assert await wait_for(lambda: session.track.frames_sent > frames, 10.0)
    return viewer, session, session.pc.getSenders()[0]._ssrc


async def test_picture_loss_indication_gets_a_keyframe(server):
    viewer, session, sender_ssrc = await streaming_viewer(server)
    track = session.track
    before = track.keyframes_sent
    await viewer.pc.getReceivers()[0]._send_rtcp_pli(sender_ssrc)
    assert await wait_for(lambda: track.keyframes_sent > before, 5.0)
    await viewer.close()


async def test_receiver_bitrate_estimate_retargets_the_encoder_within_bounds(server):
    from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

    viewer, session, sender_ssrc = await streaming_viewer(server, frames=5)
    track = session.track
    receiver = viewer.pc.getReceivers()[0]
    for estimate, expected in [(600_000, 600_000), (50_000, 200_000), (90_000_000, 4_000_000)]:
        keyframes = track.keyframes_sent
        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(estimate, [sender_ssrc]))
        await receiver._send_rtcp(remb)
        assert await wait_for(lambda expected=expected: track.target_bitrate == expected, 5.0), (estimate, track.target_bitrate)
    assert await wait_for(lambda: track._encoder is not None and track._encoder._opened_bitrate == 4_000_000, 5.0)
    assert track.keyframes_sent > keyframes  # the reopened encoder started with a keyframe
    await viewer.close()


async def test_a_failed_stream_ends_its_session(server):
    """A stream whose frames cannot be made (the render loop calls ``fail``) frees its session
    instead of holding it while the client's poses keep it from going idle."""
    srv = server.app[SERVER_KEY]
    viewer, session, _ = await streaming_viewer(server, frames=3)
    session.track.fail(RuntimeError("the encoder broke"))
    assert await wait_for(lambda: len(srv.sessions) == 0, 5.0)
    await viewer.close()


async def test_sessions_of_different_view_sizes_stream_side_by_side(server):
    """Two sessions asking for different sizes are two batches of one tick; each gets its size."""
    scene = {"radius": 3.0, "centre": (0.0, 0.8, 0.0)}
    viewers = [Viewer(), Viewer()]
    sizes = [(WIDTH, HEIGHT), (96, 64)]
    for viewer in viewers:
        await viewer.connect(base_url(server))
    for seq, (viewer, (width, height)) in enumerate(zip(viewers, sizes), start=1):
        viewer.channel.send(pose_message(seq, 30.0, width, height, scene["radius"], scene["centre"]))
    for seq, (viewer, (width, height)) in enumerate(zip(viewers, sizes), start=1):
        frame, _ = await viewer.frame_for(seq, timeout=10.0)
        assert (frame.width, frame.height) == (width, height)
    for viewer in viewers:
        await viewer.close()


async def test_an_odd_default_size_streams_at_the_even_size_below():
    """4:2:0 video needs even sizes: the default view (before any pose) is clamped as a pose's is."""
    import aiohttp

    config = ServerConfig(fps=30, width=WIDTH + 1, height=HEIGHT + 1)
    async with TestServer(create_app({"figure": figure_cloud()}, config), host="127.0.0.1") as test_server:
        async with aiohttp.ClientSession() as http, http.get(f"{base_url(test_server)}/scene") as r:
            scene = await r.json()
        assert (scene["width"], scene["height"]) == (WIDTH, HEIGHT)
        viewer, session, _ = await streaming_viewer(test_server, frames=3)
        frame = await viewer.track.recv()
        assert (frame.width, frame.height) == (WIDTH, HEIGHT)
        await viewer.close()


@pytest.mark.parametrize("threads", [1, 3])
async def test_each_sessions_encoder_runs_the_configured_threads(threads):
    config = ServerConfig(fps=30, width=WIDTH, height=HEIGHT, encoder_threads=threads)
    async with TestServer(create_app({"figure": figure_cloud()}, config), host="127.0.0.1") as test_server:
        viewer, session, _ = await streaming_viewer(test_server, frames=3)
        assert session.track._encoder._context.thread_count == threads
        await viewer.close()


async def test_a_server_with_late_starts_gives_them_to_its_sessions_and_streams():
    config = ServerConfig(fps=60, width=WIDTH, height=HEIGHT, late_start=0.25)
    async with TestServer(create_app({"figure": figure_cloud()}, config), host="127.0.0.1") as test_server:
        viewer, session, _ = await streaming_viewer(test_server, frames=5)
        assert session.track.late_start == 0.25
        assert isinstance(session.track.on_free.__self__, RenderLoop)  # the loop wakes when a frame goes out
        sent = session.track.frames_sent
        assert await wait_for(lambda: session.track.frames_sent >= sent + 5, timeout=10.0)
        await viewer.close()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or os.cpu_count() < 2, reason="needs CPU affinity and two CPUs")
def test_default_encoder_threads_follow_the_cpus_this_process_may_use():
    """A server under ``taskset`` or a container's cpuset sizes its encoders from the CPUs it was
    given, not from every CPU of the host."""
    script = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from splatcast.streaming.server import ServerConfig;"
        "print(ServerConfig(max_sessions=1).session_encoder_threads())"
    )
    pinned = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(pinned.stdout) == 1
    assert ServerConfig(max_sessions=1).session_encoder_threads() == len(os.sched_getaffinity(0))


def test_a_server_sets_the_configured_thread_switch_interval():
    """Process-wide, so set by the server that hosts sessions and put back here."""
    before = sys.getswitchinterval()
    try:
        create_app({"figure": figure_cloud()}, ServerConfig(width=WIDTH, height=HEIGHT, switch_interval_ms=0.5))
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        sys.setswitchinterval(0.002)
        create_app({"figure": figure_cloud()}, ServerConfig(width=WIDTH, height=HEIGHT))
        assert sys.getswitchinterval() == pytest.approx(0.002)  # 0: the interpreter's own left alone
    finally:
        sys.setswitchinterval(before)


async def test_vp8_is_the_fallback_when_a_peer_offers_no_h264(server):
    srv = server.app[SERVER_KEY]
    viewer = Viewer(video_codecs=("video/VP8",))
    await viewer.connect(base_url(server))
    session = next(iter(srv.sessions.sessions.values()))
    assert session.track.codec_mime.lower() == "video/vp8"
    avatar = srv.avatars["figure"]
    message = pose_message(1, 45.0, WIDTH, HEIGHT, avatar.radius, avatar.centre)
    for _ in range(6):
        viewer.channel.send(message)
    frame, _ = await viewer.frame_for(1)
    offline = reference.to_uint8(reference.render(figure_cloud(), parse_pose(message, SizeLimits()).views(), ServerConfig().background))[0].numpy()
    assert psnr(frame.to_ndarray(format="rgb24"), offline) >= 28.0
    await viewer.close()
