"""The web client in a real browser: headless Chromium opens the page the real server serves,
connects over WebRTC, decodes the avatar's video, and turns and zooms it with the mouse and touch;
the page's camera maths and frame bookkeeping are checked against the server's conventions."""

import asyncio
import io
import json
import math
from contextlib import asynccontextmanager

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestServer
from PIL import Image

from splatcast.engine.cameras import intrinsics_from_fov, intrinsics_from_projection, matrix_from_column_major, opencv_to_opengl, orbit_camera
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app

from .browser_support import chromium_page
from .test_streaming import figure_cloud, wait_for
from .turn_support import shared_secret, turn_server

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 320, 240
"""The server's stream size, so also the page's pixel budget; the page is twice as large."""
BACKGROUND = (0.08, 0.08, 0.1)


@asynccontextmanager
async def serve(max_sessions: int = 2, **settings):
    config = ServerConfig(fps=30, width=WIDTH, height=HEIGHT, max_sessions=max_sessions, idle_timeout=10.0, background=BACKGROUND, **settings)
    async with TestServer(create_app({"figure": figure_cloud()}, config), host="127.0.0.1") as test_server:
        yield test_server


@pytest.fixture
async def server():
    async with serve() as test_server:
        yield test_server


@pytest.fixture
async def browser():
    async with chromium_page(2 * WIDTH, 2 * HEIGHT) as watched:
        yield watched


def url(test_server, path: str = "/") -> str:
    return str(test_server.make_url(path))


async def stats(page) -> dict | None:
    return await page.evaluate("() => window.splatcast ? window.splatcast.stats() : null")


async def wait_for_stats(page, predicate, timeout: float, what: str) -> dict:
    """Poll the page's ``splatcast.stats()`` until ``predicate`` holds."""
    latest = None
    for _ in range(int(timeout / 0.1)):
        latest = await stats(page)
        if latest is not None and predicate(latest):
            return latest
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; page stats: {json.dumps(latest)}")


async def screenshot(page, path) -> np.ndarray:
    """The page with the readout painted over in the background colour, so only video is judged."""
    background = "#" + "".join(f"{round(255 * c):02x}" for c in BACKGROUND)
    png = await page.screenshot(path=str(path), mask=[page.locator("#overlay")], mask_color=background)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32)


def centre(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]


def foreground(image: np.ndarray) -> np.ndarray:
    """Pixels clearly not the server's background colour."""
    return np.abs(image - 255 * np.array(BACKGROUND)).max(axis=-1) > 30


def assert_avatar_visible(image: np.ndarray) -> None:
    region = centre(image)
    assert foreground(region).mean() > 0.05, "the centre of the page shows only the background"
    assert region.std() > 10, "the centre of the page is flat: no avatar"


async def move_camera(page, gesture) -> dict:
    """Run a mouse ``gesture``, then wait until a frame of the resulting pose is on screen."""
    await gesture(page.mouse)
    sent = (await stats(page))["posesSent"]
    return await wait_for_stats(page, lambda s: s["presentedSeq"] >= sent, 20, f"a presented frame of pose {sent}")


async def test_page_streams_the_avatar_and_follows_the_mouse(server, browser, tmp_path):
    page = browser.page
    await page.goto(url(server))
    first = await wait_for_stats(page, lambda s: s["framesDecoded"] >= 10 and s["presentedSeq"] > 0, 30, "decoded frames of the page's poses")
    assert first["connectionState"] == "connected"
    assert (first["frameWidth"], first["frameHeight"]) == (WIDTH, HEIGHT), "the page asks for the server's pixel budget"
    assert len(server.app[SERVER_KEY].sessions) == 1
    decoded = first["framesDecoded"]
    home = await screenshot(page, tmp_path / "home.png")
    assert_avatar_visible(home)

    async def drag(mouse):
        await mouse.move(WIDTH, HEIGHT)
        await mouse.down()
        await mouse.move(WIDTH + 200, HEIGHT, steps=10)
        await mouse.up()

    turned_stats = await move_camera(page, drag)
    assert turned_stats["camera"]["azimuthDeg"] < -45, "a drag to the right turns the camera"
    assert turned_stats["framesDecoded"] > decoded
    turned = await screenshot(page, tmp_path / "turned.png")
    assert_avatar_visible(turned)
    assert np.abs(centre(turned) - centre(home)).mean() > 5, "the video did not change with the pose"

    async def zoom_in(mouse):
        await mouse.move(WIDTH, HEIGHT)
        await mouse.wheel(0, -400)

    zoomed_stats = await move_camera(page, zoom_in)
    assert zoomed_stats["camera"]["radius"] < turned_stats["camera"]["radius"]
    zoomed = await screenshot(page, tmp_path / "zoomed.png")
    assert foreground(zoomed).mean() > 1.3 * foreground(turned).mean(), "zooming in did not enlarge the avatar"

    final = await stats(page)
    assert final["posesSent"] >= final["newestFrameSeq"] >= final["presentedSeq"] > 0
    assert final["fps"] > 0 and final["codec"] in ("video/H264", "video/VP8")
    assert 0 < final["poseToMessageMs"] < 5000 and 0 < final["poseToPresentedMs"] < 5000
    assert all(final["serverMs"][k] > 0 for k in ("render", "convert", "encode"))
    await page.screenshot(path=str(tmp_path / "page.png"))  # as a person sees it, readout included
    readout = await page.inner_text("#overlay")
    assert "connected" in readout and "pose → shown" in readout
    assert browser.errors == []
    await page.close()  # the page closes its peer connection: the session ends well before the idle timeout
    # 8 s: room for a loaded CI machine, still short of the 10 s idle timeout that would end it anyway.
    assert await wait_for(lambda: len(server.app[SERVER_KEY].sessions) == 0, 8.0), "the session outlived the page"
    print(f"browser: {final['codec']} {final['fps']} fps, pose->frame message {final['poseToMessageMs']:.1f} ms, "
          f"pose->presented {final['poseToPresentedMs']:.1f} ms, server {final['serverMs']}")


async def touch_drag(page, fingers: list[tuple[tuple[float, float], tuple[float, float]]], steps: int = 5) -> None:
    """Move fingers (each from a start to an end point, CSS pixels) across a touch screen."""
    cdp = await page.context.new_cdp_session(page)

    def points(f: float) -> list[dict]:
        return [{"id": i, "x": x0 + f * (x1 - x0), "y": y0 + f * (y1 - y0)} for i, ((x0, y0), (x1, y1)) in enumerate(fingers)]

    await cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points(0.0)})
    for step in range(1, steps + 1):
        await cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": points(step / steps)})
    await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    await cdp.detach()


async def test_gestures_steer_the_orbit_camera(server):
    """Mouse and touch gestures move the camera as documented (turn, pan, pinch, reset)."""
    async with chromium_page(2 * WIDTH, 2 * HEIGHT, has_touch=True) as browser:
        page = browser.page
        await page.goto(url(server))
        home = (await wait_for_stats(page, lambda s: s["camera"] is not None, 10, "the orbit camera"))["camera"]

        async def camera() -> dict:
            return (await stats(page))["camera"]

        def assert_same(a: dict, b: dict, keys) -> None:
            for key in keys:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key

        x, y = WIDTH, HEIGHT  # the middle of the page
        await page.mouse.move(x, y)
        await page.mouse.down(button="right")
        await page.mouse.move(x + 100, y + 50, steps=5)
        await page.mouse.up(button="right")
        panned = await camera()
        assert_same(panned, home, ["azimuthDeg", "elevationDeg", "radius"])
        assert np.linalg.norm(np.subtract(panned["target"], home["target"])) > 0.1 * home["radius"], "a right-drag pans"

        await touch_drag(page, [((x, y), (x + 120, y + 60))])
        turned = await camera()
        assert turned["azimuthDeg"] < panned["azimuthDeg"] - 30 and turned["elevationDeg"] > panned["elevationDeg"] + 10, "one finger turns"
        assert_same(turned, panned, ["radius", "target"])

        await touch_drag(page, [((x - 50, y), (x - 150, y)), ((x + 50, y), (x + 150, y))])
        pinched = await camera()
        assert pinched["radius"] == pytest.approx(turned["radius"] / 3, rel=0.05), "spreading two fingers threefold comes three times closer"
        assert_same(pinched, turned, ["azimuthDeg", "elevationDeg", "target"])

        await touch_drag(page, [((x - 50, y), (x - 50, y + 80)), ((x + 50, y), (x + 50, y + 80))])
        dragged = await camera()
        assert_same(dragged, pinched, ["azimuthDeg", "elevationDeg", "radius"])
        assert dragged["target"] != pinched["target"], "a two-finger drag pans"

        await page.mouse.dblclick(x, y)
        assert_same(await camera(), home, ["azimuthDeg", "elevationDeg", "radius", "target"])
        assert browser.errors == []


@pytest.mark.parametrize(
    ("query", "max_sessions", "expected"),
    [("?avatar=nobody", 2, "unknown avatar 'nobody'"), ("", 0, "at its limit of 0 sessions")],
    ids=["unknown-avatar", "session-limit"],
)
async def test_page_shows_the_servers_error(browser, query, max_sessions, expected):
    async with serve(max_sessions) as server:
        page = browser.page
        await page.goto(url(server, "/" + query))
        await page.wait_for_selector("#overlay .error", state="visible", timeout=10_000)
        message = await page.inner_text("#overlay .error")
        assert expected in message
        assert (await stats(page))["error"] == message
        assert await page.is_visible("#overlay .reconnect")
        assert len(server.app[SERVER_KEY].sessions) == 0
    # The one logged error is the browser's own note of the failed request.
    assert all("Failed to load resource" in error for error in browser.errors)


async def test_orbit_camera_matches_the_servers_cameras(server, browser):
    """The page's camera maths against the server's reference conventions, on random orbits."""
    page = browser.page
    await page.goto(url(server, "/healthz"))  # any page of the server's origin, with no session
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        azimuth, elevation = (torch.rand(2, generator=g) * torch.tensor([720.0, 170.0]) - torch.tensor([360.0, 85.0])).tolist()
        radius = float(torch.rand(1, generator=g)) * 5 + 0.5
        target = (torch.randn(3, generator=g)).tolist()
        width, height = (int(x) * 2 for x in torch.randint(8, 960, (2,), generator=g))
        got = await page.evaluate(
            """async ([azimuthDeg, elevationDeg, radius, target, width, height]) => {
                const { OrbitCamera } = await import("/static/orbit.js");
                const camera = new OrbitCamera({ target, radius, azimuthDeg, elevationDeg, fovDeg: 40 });
                return { matrix: camera.cameraToWorld(), projection: camera.projection(width / height) };
            }""",
            [azimuth, elevation, radius, target, width, height],
        )
        expected = opencv_to_opengl(orbit_camera(azimuth, elevation, radius, tuple(target)))
        torch.testing.assert_close(matrix_from_column_major(got["matrix"]), expected, atol=1e-5, rtol=0)
        # 40 degrees across the narrower side of the view
        vertical_fov = 40.0 if width >= height else math.degrees(2 * math.atan(math.tan(math.radians(20.0)) * height / width))
        projection = matrix_from_column_major(got["projection"])
        torch.testing.assert_close(intrinsics_from_projection(projection, width, height), intrinsics_from_fov(vertical_fov, width, height), rtol=1e-5, atol=1e-3)


async def test_stream_size_fits_the_budget_in_even_pixels(server, browser):
    page = browser.page
    await page.goto(url(server, "/healthz"))
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        css_w, css_h = (int(x) for x in torch.randint(50, 3000, (2,), generator=g))
        ratio = float(torch.rand(1, generator=g)) * 2.5 + 0.5
        budget = int(torch.randint(20_000, 2_000_000, (1,), generator=g))
        w, h = await page.evaluate(
            "async (args) => (await import('/static/pose.js')).streamSize(...args)", [css_w, css_h, ratio, budget]
        )
        assert w % 2 == 0 and h % 2 == 0
        assert w <= css_w * ratio + 1 and h <= css_h * ratio + 1, "never more pixels than the screen shows"
        assert w * h <= budget * 1.02, "within the budget (up to rounding to even pixels)"
        assert abs(w / h - css_w / css_h) < 0.02 * css_w / css_h + 2 / h, "aspect kept"
        if css_w * css_h * ratio**2 > budget * 1.1:
            assert w * h >= budget * 0.95, "a large screen gets the whole budget"


async def test_frame_log_pairs_presented_frames_with_their_poses(server, browser):
    """Presented frames map to their frame messages through the RTP timestamp, across the 32-bit
    wrap and with a fifth of the messages lost on the unreliable channel."""
    page = browser.page
    await page.goto(url(server, "/healthz"))
    g = np.random.default_rng(2)
    origin = 2**32 - 40_000  # the RTP timestamp wraps a few frames in
    pts = np.cumsum(g.integers(2700, 3300, 120)).tolist()  # 30 fps, jittered
    lost = (g.random(120) < 0.2).tolist()
    shown = await page.evaluate(
        """async ([origin, pts, lost]) => {
            const { FrameLog } = await import("/static/frames.js");
            const log = new FrameLog();
            const shown = pts.map((p, i) => {
                if (!lost[i]) log.onMessage({ type: "frame", seq: i + 1, t: 33 * i, pts: p, render_ms: 5, convert_ms: 1, encode_ms: 2 }, 33 * i + 20);
                return log.onPresented((origin + p) >>> 0, 33 * i + 50)?.seq ?? null;
            });
            return { shown, origin: log.rtpOrigin, latency: log.poseToPresentedMs };
        }""",
        [origin, pts, lost],
    )
    assert shown["origin"] == origin
    locked = next(i for i, seq in enumerate(shown["shown"]) if seq is not None)
    assert locked < 10
    assert shown["shown"][locked:] == [None if lost[i] else i + 1 for i in range(locked, 120)]
    assert shown["latency"] == pytest.approx(50.0)


async def test_frame_log_pairs_a_frame_presented_before_its_message(server, browser):
    """The video and the data channel are separate streams, so a frame can be on screen before
    its message comes: that message then pairs with it (once), and only the newest frame waits."""
    page = browser.page
    await page.goto(url(server, "/healthz"))
    result = await page.evaluate(
        """async () => {
            const { FrameLog } = await import("/static/frames.js");
            const log = new FrameLog();
            const message = (i) => ({ type: "frame", seq: i, t: 10 * i, pts: 3000 * i, render_ms: 1, convert_ms: 1, encode_ms: 1 });
            for (let i = 1; i <= 6; i++) {  // in order: the RTP origin locks
                log.onMessage(message(i), 10 * i + 5);
                log.onPresented(1000 + 3000 * i, 10 * i + 8);
            }
            const early = log.onPresented(1000 + 3000 * 7, 78);  // frame 7 before its message
            const superseded = log.onPresented(1000 + 3000 * 8, 88);  // frame 8 too: 7 no longer waits
            const stale = log.onMessage(message(7), 90);
            const late = log.onMessage(message(8), 91);
            const again = log.onMessage(message(8), 92);
            return { origin: log.rtpOrigin, early, superseded, stale, late: late?.seq, again, seq: log.presentedSeq,
                     latency: log.poseToPresentedSamples.at(-1) };
        }"""
    )
    assert result["origin"] == 1000
    assert result["early"] is None and result["superseded"] is None and result["stale"] is None
    assert result["late"] == 8 and result["again"] is None
    assert result["seq"] == 8 and result["latency"] == pytest.approx(88 - 80)


@pytest.mark.parametrize("minted_with", ["the shared secret", "another secret"])
async def test_page_streams_through_a_turn_relay_alone(browser, tmp_path, minted_with):
    """With ``?ice=relay`` the page may use relay candidates only: every frame crosses a real coturn,
    on the credentials the server minted for this viewer (``POST /ice``). Credentials the TURN
    server refuses leave no route: the page says so."""
    with turn_server(shared_secret("the shared secret"), tmp_path) as turn_url:
        async with serve(ice_servers=[turn_url], turn_secret=minted_with) as server:
            await browser.page.goto(url(server, "/?ice=relay"))
            if minted_with == "the shared secret":
                streaming = await wait_for_stats(browser.page, lambda s: s["framesDecoded"] >= 10, 30, "frames decoded through the relay")
                assert streaming["route"] == "relay" and streaming["connectionState"] == "connected"
            else:
                failed = await wait_for_stats(browser.page, lambda s: s["error"] is not None, 20, "the page's error")
                assert failed["error"].startswith("no route to the server") and failed["framesDecoded"] == 0
                assert (await browser.page.inner_text("#overlay .error")) == failed["error"]
                assert await browser.page.is_visible("#overlay .reconnect")
