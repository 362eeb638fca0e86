"""Headless Chromium for the browser tests: Debian's ``chromium`` package driven by Playwright.

No browser is ever downloaded: the Debian package is installed with apt when it is missing (only
as root), and Playwright is pointed at it through ``executable_path`` (``playwright install`` is
never run). Playwright gives each launch a fresh temporary profile (``--user-data-dir``) and runs
it without the sandbox, which containers lack.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .debian_packages import ensure_installed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Offer real host addresses, not mDNS names the server would have to resolve.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

WEBXR_EMULATOR = ("iwer@2.5.0", "package/build/iwer.min.js", "23d8640949f19db4b1e70398b30e084e4aa555f3a81e4329da3fac1a70b39542")
"""npm package, the UMD build inside its tarball, and that file's SHA-256."""
TEST_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "splatcast-tests"


def ensure_chromium() -> Path:
    """Debian's Chromium, installed when missing; skips the test when it cannot be."""
    return ensure_installed(CHROMIUM, "chromium")


@dataclass
class BrowserPage:
    """A page and the JavaScript errors it raised or logged (a test fails on any)."""

    page: object  # playwright.async_api.Page
    errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def chromium_page(width: int, height: int, has_touch: bool = False) -> AsyncIterator[BrowserPage]:
    """A fresh headless Chromium with one page of ``width`` x ``height`` CSS pixels (a touch
    screen when ``has_touch``)."""
    playwright_api = pytest.importorskip("playwright.async_api", reason="the browser tests drive Chromium with playwright")
    executable = ensure_chromium()
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1, has_touch=has_touch)
            watched = BrowserPage(page)
            page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
            page.on("console", lambda message: watched.errors.append(f"console: {message.text}") if message.type == "error" else None)
            yield watched
        finally:
            await browser.close()


def webxr_emulator() -> Path:
    """Meta's Immersive Web Emulation Runtime (IWER, MIT): a WebXR headset in plain JavaScript,
    for the VR tests to put on the page, since headless Chromium has none (its own WebXR test API
    needs Chromium's web-test build). Its UMD build comes from the npm registry with ``npm pack``
    (which checks the registry's integrity hash) into a cache folder at first use, and must match a
    pinned SHA-256. The test is skipped when npm or the registry cannot be reached. The product
    page never loads it."""
    package, member, sha256 = WEBXR_EMULATOR
    script = TEST_CACHE / package.replace("@", "-") / Path(member).name
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("the WebXR emulator comes from the npm registry and npm is not installed")
        with tempfile.TemporaryDirectory() as scratch:
            done = subprocess.run([npm, "pack", package, "--silent", "--pack-destination", scratch], capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                pytest.skip(f"`npm pack {package}` failed: {done.stderr.strip()[-300:]}")
            with tarfile.open(Path(scratch) / done.stdout.strip().splitlines()[-1]) as archive:
                data = archive.extractfile(member).read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise AssertionError(f"{package} {member} does not match its pinned SHA-256")
        script.parent.mkdir(parents=True, exist_ok=True)
        partial = script.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(script)  # atomic: a concurrent test run never reads half a file
    return script
