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
