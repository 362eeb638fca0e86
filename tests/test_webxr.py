"""The web client in VR: an emulated headset (IWER, loaded by the test only) in headless Chromium
enters an immersive session on the page the real server serves; stereo poses reach the server, side
by side frames come back, each eye shows its own view, and reprojection keeps a moving head's view
close to a fresh render of where it looks. The reprojection maths itself is checked by node."""

import asyncio
import base64
import io
import json
import math
import os
import shutil
import subprocess
import time
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestServer
from PIL import Image

from splatcast.engine.cameras import matrix_from_column_major, opencv_to_opengl, orbit_camera
from splatcast.kernels import reference
from splatcast.streaming.protocol import SizeLimits, parse_pose
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app

from .browser_support import chromium_page, webxr_emulator
from .test_browser import BACKGROUND, foreground, stats, url, wait_for_stats
from .test_streaming import figure_cloud

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 320, 240
"""The server's stream size: the pixel budget a stereo pair shares."""
EYE = 240
"""IWER splits the window between the eyes: a 2 EYE x EYE page is two EYE x EYE eyes (90 degrees)."""
IPD = 0.063  # IWER's default
INSTALL_HEADSET = """
window.xrDevice = new IWER.XRDevice(IWER.metaQuest3, { stereoEnabled: true });
window.xrDevice.installRuntime({ forceInstall: true });  // over Chromium's own navigator.xr, which has no headset
// Head at `position` (metres, the emulator's world), turned by yaw (about y) then pitch (about x), radians.
window.setHead = (position, yaw, pitch) => {
    const [sy, cy, sp, cp] = [Math.sin(yaw / 2), Math.cos(yaw / 2), Math.sin(pitch / 2), Math.cos(pitch / 2)];
    xrDevice.position.set(...position);
    xrDevice.quaternion.set(cy * sp, sy * cp, -sy * sp, cy * cp);
};
"""


def test_reprojection_maths_in_node():
    """tests/js: the timewarp homographies against direct projections (see reproject.test.mjs)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    files = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests" / "js").glob("*.test.mjs"))
    done = subprocess.run([node, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = int(next(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("# pass")))
    assert passed >= 5, done.stdout[-2000:]


@asynccontextmanager
async def serve():
    config = ServerConfig(fps=30, width=WIDTH, height=HEIGHT, max_sessions=1, idle_timeout=10.0, background=BACKGROUND)
    async with TestServer(create_app({"figure": figure_cloud()}, config), host="127.0.0.1") as test_server:
        yield test_server


def record_poses(test_server):
    """The server's one session, recording in ``session.received`` every pose its track takes."""
    (session,) = test_server.app[SERVER_KEY].sessions.sessions.values()
    session.received = []
    update_pose = session.track.update_pose

    def record(pose):
        session.received.append(pose)
        return update_pose(pose)

    session.track.update_pose = record  # a spy: the track still takes every pose
    return session


@asynccontextmanager
async def headset_page(test_server):
    """A 2 EYE x EYE page with an emulated headset, its VR session started, and the server's
    session, whose received poses are recorded in ``session.received``."""
    async with chromium_page(2 * EYE, EYE) as browser:
        page = browser.page
        await page.add_init_script(path=str(webxr_emulator()))
        await page.add_init_script(script=INSTALL_HEADSET)
        await page.goto(url(test_server))
        await page.wait_for_selector("#enter-vr", state="visible", timeout=10_000)
        await wait_for_stats(page, lambda s: s["presentedSeq"] > 0, 30, "the flat view's first frames")
        session = record_poses(test_server)
        await page.click("#enter-vr")
        await wait_for_stats(page, lambda s: s["mode"] == "vr" and s["xr"]["frames"] > 0, 10, "the VR session")
        yield browser, session
        assert browser.errors == []


async def move_head(page, position, yaw_deg=0.0, pitch_deg=0.0) -> None:
    """Put the emulated head at ``position`` (metres, the emulator's world) turned by yaw then pitch."""
    await page.evaluate("(head) => setHead(...head)", [position, math.radians(yaw_deg), math.radians(pitch_deg)])


def head_matrix(position, yaw_deg=0.0, pitch_deg=0.0) -> torch.Tensor:
    """The emulated head's rigid transform, as ``move_head`` sets it."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = torch.tensor([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]], dtype=torch.float64)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]], dtype=torch.float64)
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = ry @ rx
    m[:3, 3] = torch.tensor(position, dtype=torch.float64)
    return m


async def capture(page) -> dict:
    """What each eye shows now, under each reprojection mode (ImmersiveViewer.capture), as images."""
    captured = await page.evaluate("() => splatcast.captureXRFrame()")
    w, h = captured["width"], captured["height"]
    captured["eyes"] = {
        mode: [np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 4)[::-1, :, :3].astype(np.float32) for data in eyes]
        for mode, eyes in captured["eyes"].items()
    }
    return captured


def fresh_renders(cloud, views: list[dict], width: int, height: int) -> np.ndarray:
    """The server's reference renderer at exactly these views, (V, H, W, 3) in 0..255."""
    message = {"v": 1, "type": "pose", "seq": 0, "t": 0, "width": width, "height": height, "views": views}
    pose = parse_pose(json.dumps(message), SizeLimits(max_width=4096, max_height=4096))
    assert (pose.width, pose.height) == (width, height)
    return reference.to_uint8(reference.render(cloud, pose.views(), BACKGROUND)).numpy().astype(np.float32)


def ndc_of(view: dict, point) -> np.ndarray:
    """World point -> NDC (x, y) through a pose-protocol view."""
    camera_to_world = matrix_from_column_major(view["matrix"]).double()
    projection = matrix_from_column_major(view["projection"]).double()
    clip = projection @ torch.linalg.inv(camera_to_world) @ torch.tensor([*point, 1.0], dtype=torch.float64)
    return (clip[:2] / clip[3]).numpy()


def best_horizontal_shift(a: np.ndarray, b: np.ndarray, max_shift: int = 25) -> tuple[int, float, float]:
    """The shift s (pixels) for which b moved right by s best matches a, and the mean differences
    (inner columns) at s and with no shift."""
    errors = {s: np.abs(a[:, max_shift : -max_shift] - np.roll(b, s, axis=1)[:, max_shift : -max_shift]).mean() for s in range(-max_shift, max_shift + 1)}
    shift = min(errors, key=errors.get)
    return shift, errors[shift], errors[0]


@pytest.mark.browser
async def test_vr_session_sends_stereo_poses_and_each_eye_shows_its_own_view(tmp_path):
    cloud = figure_cloud()
    async with serve() as server, headset_page(server) as (browser, session):
        page = browser.page
        scene = await page.evaluate("() => fetch('/scene').then((r) => r.json())")
        # Step towards the avatar and look a little left and down.
        head = ([0.0, 1.6, -1.3], 8.0, -4.0)
        await move_head(page, *head)
        moved_at = (await stats(page))["posesSent"]
        settled = await wait_for_stats(page, lambda s: s["xr"]["renderedSeq"] > moved_at + 5, 30, "frames of the moved head's poses")

        # From the session's first XR frame on, one stereo pose per XR frame reaches the server
        # (and heartbeats), with the head where it was put.
        first = next(i for i, pose in enumerate(session.received) if pose.num_views == 2)
        stereo = session.received[first:]
        assert all(pose.num_views == 2 for pose in stereo), "a mono pose during the VR session"
        assert len(stereo) >= 0.9 * settled["xr"]["frames"] >= 10, f"{len(stereo)} poses for {settled['xr']['frames']} XR frames"
        placement = opencv_to_opengl(orbit_camera(0.0, 0.0, scene["radius"], tuple(scene["centre"]))).double()
        local_head = head_matrix(*head)
        local_head[:3, 3] -= torch.tensor([0.0, 1.6, 0.0], dtype=torch.float64)  # IWER's "local" space starts at the head
        latest = session.received[-1]
        for eye, side in enumerate((-1, 1)):
            offset = torch.eye(4, dtype=torch.float64)
            offset[0, 3] = side * IPD / 2
            torch.testing.assert_close(torch.as_tensor(latest.camera_to_world[eye]).double(), placement @ local_head @ offset, atol=1e-4, rtol=0)
        assert latest.width == latest.height == 196, "a square eye within half the 320x240 budget, in even pixels"

        # Side-by-side frames come back, and each eye shows its own view.
        assert (settled["frameWidth"], settled["frameHeight"]) == (2 * latest.width, latest.height)
        # The emulator's window covers the page (readout included): left eye, right eye.
        shown = np.asarray(Image.open(io.BytesIO(await page.screenshot(path=str(tmp_path / "vr.png")))).convert("RGB")).astype(np.float32)
        captured = await capture(page)
        for _ in range(30):  # the shown frame's message may still be on its way: the next XR frames
            if captured["rendered"] is not None:
                break
            captured = await capture(page)
        assert captured["rendered"] is not None and (captured["width"], captured["height"]) == (EYE, EYE)
        expected = fresh_renders(cloud, captured["displayed"], EYE, EYE)
        left, right = shown[:, :EYE], shown[:, EYE:]
        for eye, image in enumerate((left, right)):
            assert foreground(image).mean() > 0.05, f"eye {eye} shows no avatar"
            own, other = (np.abs(image - expected[i]).mean() for i in (eye, 1 - eye))
            assert own < 6.0, f"eye {eye} differs from a render of its own view by {own:.1f} levels"
            assert own < 0.8 * other, f"eye {eye} is no closer to its own view ({own:.2f}) than to the other eye's ({other:.2f})"

        # The eyes differ by a small horizontal parallax, not by content: one is the other shifted.
        centre_ndc = [ndc_of(view, scene["centre"]) for view in captured["displayed"]]
        disparity = (centre_ndc[0][0] - centre_ndc[1][0]) * EYE / 2
        shift, residual, unshifted = best_horizontal_shift(left, right)
        assert abs(centre_ndc[0][1] - centre_ndc[1][1]) * EYE / 2 < 0.5, "no vertical parallax"
        assert 3.0 < disparity < 20.0 and abs(shift - disparity) <= 1.5, f"parallax {shift} px, expected {disparity:.1f} px"
        assert residual < 0.3 * unshifted, f"the eyes differ by more than a shift ({residual:.2f} vs {unshifted:.2f} unshifted)"
        print(f"VR: {len(stereo)} stereo poses in {settled['xr']['frames']} XR frames, eye {latest.width}x{latest.height}, parallax {shift} px (expected {disparity:.1f}), "
              f"pose->presented p50 {settled['poseToPresentedP50']:.0f} ms")


@pytest.mark.browser
async def test_stereo_preview_streams_the_pair_side_by_side(tmp_path):
    """Without a headset there is no "Enter VR"; the preview toggle streams both eyes flat."""
    async with serve() as server, chromium_page(2 * EYE, EYE) as browser:
        page = browser.page
        await page.goto(url(server))
        mono = await wait_for_stats(page, lambda s: s["presentedSeq"] > 0, 30, "the flat view's first frames")
        assert mono["mode"] == "mono" and not await page.is_visible("#enter-vr")
        session = record_poses(server)
        await page.check("#stereo-preview")
        sent = (await stats(page))["posesSent"]
        preview = await wait_for_stats(page, lambda s: s["presentedSeq"] > sent, 30, "a frame of the stereo preview")
        assert preview["mode"] == "stereo preview"
        pose = session.received[-1]
        assert pose.num_views == 2 and pose.width == pose.height == 196, "each eye half the page, within half the 320x240 budget"
        assert (preview["frameWidth"], preview["frameHeight"]) == (2 * pose.width, pose.height), "side by side"
        eyes = torch.as_tensor(pose.camera_to_world)
        torch.testing.assert_close(eyes[1, :3, 3] - eyes[0, :3, 3], eyes[0, :3, 0] * IPD, atol=1e-5, rtol=0)  # apart along x
        torch.testing.assert_close(eyes[1, :3, :3], eyes[0, :3, :3])
        await page.add_style_tag(content="#overlay, #controls { visibility: hidden; }")  # only video in the picture
        shown = np.asarray(Image.open(io.BytesIO(await page.screenshot(path=str(tmp_path / "preview.png")))).convert("RGB")).astype(np.float32)
        left, right = shown[:, :EYE], shown[:, EYE:]
        assert foreground(left).mean() > 0.02 and foreground(right).mean() > 0.02, "an avatar in each half"
        shift, residual, unshifted = best_horizontal_shift(left, right)
        assert 2 <= shift <= 15 and residual < 0.3 * unshifted, f"parallax {shift} px: {residual:.2f} vs {unshifted:.2f} unshifted"
        assert browser.errors == []


HEAD_MOTIONS = {
    "turn": {"yaw_deg": 15.0, "yaw_period_s": 2.0, "pitch_deg": 5.0, "pitch_period_s": 2.9, "sway_m": 0.0, "sway_period_s": 1.0},
    "sway": {"yaw_deg": 0.0, "yaw_period_s": 1.0, "pitch_deg": 0.0, "pitch_period_s": 1.0, "sway_m": 0.08, "sway_period_s": 1.5},
}
"""Scripted head motions, each a sinusoid: a turn (yaw and pitch, peak about 47 and 11 deg/s) and
a sideways sway (peak 0.34 m/s), both from the head position NEAR."""
NEAR = [0.0, 1.6, -1.0]
"""1 m closer than the page's home view: the avatar about 1.6 m away, filling much of each eye."""
CAPTURES = 8

DRIVE_HEAD = """motion => {
    const start = performance.now();
    const drive = () => {
        if (window.headMotion !== motion) return;  // another motion took over
        const t = (performance.now() - start) / 1000;
        const wave = (amplitude, period) => amplitude * Math.sin(2 * Math.PI * t / period);
        const position = [motion.x + wave(motion.sway_m, motion.sway_period_s), motion.y, motion.z];
        setHead(position, wave(motion.yaw_deg, motion.yaw_period_s) * Math.PI / 180, wave(motion.pitch_deg, motion.pitch_period_s) * Math.PI / 180);
        requestAnimationFrame(drive);
    };
    window.headMotion = motion;
    requestAnimationFrame(drive);
}"""


def mean_errors(shown: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Mean absolute difference (0..255 levels) over all pixels, and over the avatar's pixels
    (where either image is not background)."""
    difference = np.abs(shown - expected)
    avatar = foreground(shown) | foreground(expected)
    return float(difference.mean()), float(difference[avatar].mean())


def pose_change(a: dict, b: dict) -> tuple[float, float]:
    """Angle (degrees) and distance (centimetres) between two views."""
    ma, mb = (matrix_from_column_major(v["matrix"]).double() for v in (a, b))
    cosine = (float(torch.trace(ma[:3, :3].T @ mb[:3, :3])) - 1) / 2
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine)))), 100 * float(torch.linalg.norm(ma[:3, 3] - mb[:3, 3]))


def score(cloud, captures: list[dict]) -> dict:
    """Mean errors per reprojection mode against fresh renders at the displayed poses, and how far
    the head had moved between render and display."""
    paired = [c for c in captures if c["rendered"] is not None and len(c["rendered"]) == 2]
    errors = {mode: [] for mode in captures[0]["eyes"]}
    moved = []
    for captured in paired:
        expected = fresh_renders(cloud, captured["displayed"], captured["width"], captured["height"])
        moved.append(pose_change(captured["rendered"][0], captured["displayed"][0]))
        for mode, eyes in captured["eyes"].items():
            errors[mode] += [mean_errors(shown, expected[eye]) for eye, shown in enumerate(eyes)]
    return {
        "captures": len(paired),
        "render_to_display_deg": float(np.mean([m[0] for m in moved])) if moved else None,
        "render_to_display_cm": float(np.mean([m[1] for m in moved])) if moved else None,
        "mean_abs_error_levels": {
            mode: dict(zip(("all_pixels", "avatar_pixels"), map(float, np.mean(values, axis=0)))) for mode, values in errors.items() if values
        },
    }


@pytest.mark.browser
async def test_reprojection_keeps_a_moving_head_close_to_a_fresh_render():
    """Captures with the head still, then turning, then swaying: each eye as drawn with no
    reprojection, rotational timewarp and the avatar-plane homography, against the reference
    renderer at the pose the eye was displayed with. Reprojection removes most of the error of a
    turn; for a sway only the plane helps."""
    captures = {}
    async with serve() as server, headset_page(server) as (browser, session):
        page = browser.page
        await move_head(page, NEAR)
        moved_at = (await stats(page))["posesSent"]
        await wait_for_stats(page, lambda s: s["xr"]["renderedSeq"] > moved_at, 30, "frames of the moved head")
        captures["still"] = [await capture(page)]
        for name, motion in HEAD_MOTIONS.items():
            await page.evaluate(DRIVE_HEAD, {**motion, "x": NEAR[0], "y": NEAR[1], "z": NEAR[2]})
            await asyncio.sleep(0.5)
            captures[name] = []
            for _ in range(CAPTURES):
                captures[name].append(await capture(page))
                await asyncio.sleep(0.15)
        final = await stats(page)
        await page.evaluate("() => { window.headMotion = null; }")

    # Scored once the server is gone: its event loop is this one, and rendering here would stall it.
    cloud = figure_cloud()
    results = {name: score(cloud, captured) for name, captured in captures.items()}
    print("reprojection:", json.dumps(results))
    still = results["still"]["mean_abs_error_levels"]
    assert still["plane"]["avatar_pixels"] < 15, f"a still head's eye is far from a fresh render: {still}"
    for name in HEAD_MOTIONS:
        assert results[name]["captures"] >= CAPTURES // 2, f"{name}: too few captures showed a paired stereo frame"
    turn, sway = (results[name]["mean_abs_error_levels"] for name in ("turn", "sway"))
    assert results["turn"]["render_to_display_deg"] > 1.0, "the head hardly turned between render and display: nothing to correct"
    assert results["sway"]["render_to_display_cm"] > 1.0, "the head hardly moved between render and display: nothing to correct"
    assert turn["rotation"]["avatar_pixels"] < 0.6 * turn["none"]["avatar_pixels"], f"rotational timewarp barely helps a turn: {turn}"
    assert turn["plane"]["avatar_pixels"] < 0.6 * turn["none"]["avatar_pixels"], f"the plane reprojection barely helps a turn: {turn}"
    assert sway["plane"]["avatar_pixels"] < 0.7 * sway["rotation"]["avatar_pixels"], f"the plane reprojection barely helps a sway: {sway}"

    if report := os.environ.get("SPLATCAST_WEBXR_REPORT"):
        write_report(Path(report), {
            "what": "pose sent -> frame presented (client clock), and mean pixel error of each eye against a fresh reference render at its display pose",
            "eye_size": [EYE, EYE],
            "stream_eye_size": [session.received[-1].width, session.received[-1].height],
            "server_fps": 30,
            "head_motions": HEAD_MOTIONS,
            "pose_to_presented_ms": {"p50": final["poseToPresentedP50"], "p95": final["poseToPresentedP95"], "samples": final["poseToPresentedCount"]},
            "presented_fps": final["fps"],
            "server_ms_smoothed": final["serverMs"],
            **results,
        })


def write_report(path: Path, result: dict) -> None:
    """The measurement as a benchmark result: date, commit, machine."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "unknown CPU")
    machine = f"CPU ({cpu}, {os.cpu_count()} cores), headless Chromium (SwiftShader WebGL), IWER-emulated headset"
    load = os.getloadavg()[0]  # other work on the machine slows the CPU renderer and so the latency
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "commit": commit, "machine": machine, "load_average_1min": load, **result}, indent=2) + "\n")
