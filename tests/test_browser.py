"""The web client in a real browser: headless Chromium opens the page the real server serves,
connects over WebRTC, decodes the avatar's video, and turns and zooms it with the mouse."""

import asyncio
import io
import json

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestServer
from PIL import Image

from splatcast.kernels.cameras import intrinsics_from_fov, intrinsics_from_projection, matrix_from_column_major, opencv_to_opengl, orbit_camera
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app

from .browser_support import chromium_page
from .test_streaming import figure_cloud

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 320, 240
"""The server's stream size, so also the page's pixel budget; the page is twice as large."""
BACKGROUND = (0.08, 0.08, 0.1)


@pytest.fixture
async def server():
    config = ServerConfig(fps=30, width=WIDTH, height=HEIGHT, max_sessions=2, idle_timeout=10.0, background=BACKGROUND)
    app = create_app({"figure": figure_cloud()}, config)
    async with TestServer(app, host="127.0.0.1") as test_server:
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
    print(f"browser: {final['codec']} {final['fps']} fps, pose->frame message {final['poseToMessageMs']:.1f} ms, "
          f"pose->presented {final['poseToPresentedMs']:.1f} ms, server {final['serverMs']}")


async def test_page_shows_the_servers_error(server, browser):
    page = browser.page
    await page.goto(url(server, "/?avatar=nobody"))
    await page.wait_for_selector("#overlay .error", state="visible", timeout=10_000)
    message = await page.inner_text("#overlay .error")
    assert "unknown avatar 'nobody'" in message
    assert (await stats(page))["error"] == message
    assert await page.is_visible("#overlay .reconnect")
    assert len(server.app[SERVER_KEY].sessions) == 0
    # The one logged error is the browser's note of the 404 itself.
    assert all("404" in error for error in browser.errors)


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
                const camera = new OrbitCamera({ target, radius, azimuthDeg, elevationDeg, verticalFovDeg: 40 });
                return { matrix: camera.cameraToWorld(), projection: camera.projection(width / height) };
            }""",
            [azimuth, elevation, radius, target, width, height],
        )
        expected = opencv_to_opengl(orbit_camera(azimuth, elevation, radius, tuple(target)))
        torch.testing.assert_close(matrix_from_column_major(got["matrix"]), expected, atol=1e-5, rtol=0)
        projection = matrix_from_column_major(got["projection"])
        torch.testing.assert_close(intrinsics_from_projection(projection, width, height), intrinsics_from_fov(40.0, width, height), rtol=1e-5, atol=1e-3)


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
