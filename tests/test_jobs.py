"""Reconstruction jobs run in a child process: one that dies fails its avatar, the server and its
sessions go on, and so does the queue with the next photo."""

import asyncio
import os
import signal

import aiohttp

from splatcast.streaming.server import SERVER_KEY
from splatcast.streaming.viewer import Viewer

from .test_api import astronaut_png, start, upload, wait_for_status
from .test_streaming import figure_cloud


def die_once_then_reconstruct(photo, report):
    """A reconstruction whose first run kills its process (as a segfault or the OOM killer would)."""
    marker = photo.parent.parent / "died"
    if not marker.exists():
        marker.write_text("")
        report("dying")
        os.kill(os.getpid(), signal.SIGKILL)
    report("building")
    return figure_cloud(300)


async def test_a_dead_reconstruction_process_fails_its_avatar_and_the_next_job_runs(tmp_path):
    server = await start(tmp_path, reconstruct=die_once_then_reconstruct)
    viewer = Viewer()
    try:
        token, _ = server.app[SERVER_KEY].authority.mint("sample")
        await viewer.connect(str(server.make_url("")).rstrip("/"), avatar="sample", token=token)
        async with aiohttp.ClientSession() as http:
            _, first = await upload(http, server, astronaut_png())
            failed = await wait_for_status(http, server, first["id"], {"ready", "failed"})
            assert failed["status"] == "failed" and "process died" in failed["reason"], failed
            # The server, and the session it was streaming, lived through it.
            assert len(server.app[SERVER_KEY].sessions) == 1
            assert (await asyncio.wait_for(viewer.track.recv(), 10)).width == 96
            _, second = await upload(http, server, astronaut_png())
            ready = await wait_for_status(http, server, second["id"], {"ready", "failed"})
            assert ready["status"] == "ready", ready
    finally:
        await viewer.close()
        await server.close()


def fail_with_a_bug(photo, report):
    raise KeyError("not the photo's fault")


async def test_an_error_in_the_reconstruction_fails_its_avatar_naming_the_error(tmp_path):
    server = await start(tmp_path, reconstruct=fail_with_a_bug)
    try:
        async with aiohttp.ClientSession() as http:
            _, record = await upload(http, server, astronaut_png())
            failed = await wait_for_status(http, server, record["id"], {"ready", "failed"})
    finally:
        await server.close()
    assert failed["status"] == "failed" and failed["reason"] == "internal error: KeyError", failed
