"""Schemathesis against the served OpenAPI spec of a real ``splatcast serve``: no 5xx, ever."""

import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from aiohttp.test_utils import unused_port

from splatcast.engine.formats import save_asset

from .test_streaming import figure_cloud


@pytest.fixture
def served(tmp_path):
    avatar = tmp_path / "figure.ply"
    save_asset(figure_cloud(300), avatar)
    port = unused_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "splatcast.cli", "serve", "--avatar", str(avatar), "--port", str(port), "--width", "64", "--height", "48",
         "--store", str(tmp_path / "store"), "--api-key", "fuzz-key"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield base, server
    server.terminate()
    server.wait(10)


def test_no_server_errors_on_generated_requests(served, tmp_path):
    base, server = served
    schemathesis = shutil.which("schemathesis") or shutil.which("st")
    if schemathesis is None:
        pytest.skip("schemathesis is not installed (pip install '.[test]')")
    result = subprocess.run(
        [schemathesis, "run", f"{base}/openapi.json", "--checks", "not_a_server_error", "-n", "40",
         "-H", "Authorization: Bearer fuzz-key", "--request-timeout", "20", "--generation-deterministic"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert server.poll() is None, "the server died under fuzzing"
