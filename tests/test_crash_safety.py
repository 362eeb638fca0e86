"""Crash safety of the avatar store: SIGKILL a process while it writes avatars, then recover."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

from splatcast.engine.formats import load_asset
from splatcast.streaming.avatar_store import AvatarStore

WRITER = textwrap.dedent(
    """
    import sys, torch
    from splatcast.engine.gaussians import random_cloud
    from splatcast.streaming.avatar_store import AvatarStore
    store = AvatarStore(sys.argv[1], max_gaussians=10**6)
    cloud = random_cloud(80_000, sh_degree=3, generator=torch.Generator().manual_seed(0))
    print("ready", flush=True)
    while True:
        record = store.create("upload.ply", b"ply placeholder source", "running")
        store.finish(record, cloud)
    """
)


def test_sigkill_while_writing_never_leaves_a_broken_avatar_listed_ready(tmp_path):
    rng = random.Random()
    for _ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 1.5))  # somewhere inside a 30 MB write, most likely
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()

        store = AvatarStore(tmp_path, max_gaussians=10**6)
        ready, requeue = store.recover()
        for record in store.records():
            assert record.status in ("ready", "failed", "queued")
        for record in ready:
            assert len(load_asset(store.asset_path(record.id))) == 80_000
        # Anything listed ready loads; temporaries are gone.
        assert not [p for p in tmp_path.rglob(".*") if p.is_file()]
        assert requeue == []  # uploads that were mid-write have no photo to redo
    assert len(AvatarStore(tmp_path, 10**6).recover()[0]) >= 1


def test_sigkill_during_a_reconstruction_requeues_it_and_keeps_finished_avatars(tmp_path):
    """A real 'splatcast serve' killed while reconstructing a photo; the restart finishes the job."""
    import io
    import json
    import socket
    import urllib.request

    from PIL import Image
    from skimage import data

    from splatcast.engine.formats import save_asset

    from .test_streaming import figure_cloud

    avatar = tmp_path / "figure.ply"
    save_asset(figure_cloud(300), avatar)
    store = tmp_path / "store"

    def start() -> tuple[subprocess.Popen, str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "splatcast.cli", "serve", "--avatar", str(avatar), "--port", str(port), "--width", "64",
             "--height", "48", "--store", str(store), "--gaussians", "20000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                return server, base
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("server did not start")

    def call(method: str, url: str, body: bytes | None = None) -> dict:
        request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    photo = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((256, 256)).save(photo, format="PNG")
    server, base = start()
    try:
        finished = call("POST", f"{base}/avatars", avatar.read_bytes())
        assert finished["status"] == "ready"
        job = call("POST", f"{base}/avatars", photo.getvalue())
        for _ in range(600):  # until the reconstruction is under way
            state = call("GET", f"{base}/avatars/{job['id']}")["status"]
            if state != "queued":
                break
            time.sleep(0.05)
        assert state == "running"
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    finally:
        if server.poll() is None:
            server.kill()

    server, base = start()
    try:
        assert call("GET", f"{base}/avatars/{finished['id']}")["status"] == "ready"
        for _ in range(2400):
            record = call("GET", f"{base}/avatars/{job['id']}")
            if record["status"] in ("ready", "failed"):
                break
            time.sleep(0.1)
        assert record["status"] == "ready", record
        with urllib.request.urlopen(f"{base}/avatars/{job['id']}/ply", timeout=30) as response:
            (tmp_path / "job.ply").write_bytes(response.read())
        assert len(load_asset(tmp_path / "job.ply")) > 1000
    finally:
        server.terminate()
        server.wait(20)
