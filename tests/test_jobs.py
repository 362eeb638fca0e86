"""Reconstruction jobs run in a child process: one that dies fails its avatar, the server and its
sessions go on, and so does the queue with the next photo."""

import asyncio
import multiprocessing
import os
import signal

import aiohttp

from splatcast.streaming.server import SERVER_KEY
from splatcast.streaming.viewer import Viewer

from .test_api import reconstructed, start
from .test_streaming import figure_cloud, wait_for


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
            failed = await reconstructed(http, server)
            assert failed["status"] == "failed" and "process died" in failed["reason"], failed
            # The server, and the session it was streaming, lived through it.
            assert len(server.app[SERVER_KEY].sessions) == 1
            assert (await asyncio.wait_for(viewer.track.recv(), 10)).width == 96
            ready = await reconstructed(http, server)
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
            failed = await reconstructed(http, server)
    finally:
        await server.close()
    assert failed["status"] == "failed" and failed["reason"] == "internal error: KeyError", failed


def scripted(photo, report):
    """Notes its process id, then takes the next step of the script in the store's folder: build
    an avatar, refuse the photo, or fail with an error of its own."""
    with open(photo.parent.parent / "pids", "a") as pids:
        pids.write(f"{os.getpid()}\n")
    script = photo.parent.parent / "script"
    step, *rest = script.read_text().split()
    script.write_text(" ".join(rest))
    if step == "refuse":
        raise ValueError("no person found")
    if step == "bug":
        raise KeyError("not the photo's fault")
    return figure_cloud(300)


async def run_script(tmp_path, steps: list[str], **queue_options) -> tuple[list[dict], list[int]]:
    """Each step's avatar record and the process that ran it, one upload after another."""
    server = await start(tmp_path, reconstruct=scripted)
    jobs = server.app[SERVER_KEY].jobs
    for name, value in queue_options.items():
        setattr(jobs, name, value)
    (tmp_path / "store" / "script").write_text(" ".join(steps))
    records = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in steps:
                records.append(await reconstructed(http, server))
    finally:
        await server.close()
    return records, [int(pid) for pid in (tmp_path / "store" / "pids").read_text().split()]


async def test_one_process_serves_photo_after_photo_and_a_refused_photo_keeps_it(tmp_path):
    records, pids = await run_script(tmp_path, ["build", "refuse", "build"])
    assert [r["status"] for r in records] == ["ready", "failed", "ready"]
    assert records[1]["reason"] == "no person found"
    assert len(set(pids)) == 1 and pids[0] != os.getpid()


async def test_an_error_of_its_own_retires_the_process(tmp_path):
    records, pids = await run_script(tmp_path, ["build", "bug", "build"])
    assert [r["status"] for r in records] == ["ready", "failed", "ready"]
    assert pids[0] == pids[1] != pids[2], "the job after an internal error runs in a fresh process"


async def test_a_process_is_replaced_after_its_share_of_jobs(tmp_path):
    _, pids = await run_script(tmp_path, ["build"] * 5, jobs_per_child=2)
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def reconstruction_processes() -> list[int]:
    return [p.pid for p in multiprocessing.active_children() if p.name == "splatcast-reconstruct"]


async def test_an_idle_process_ends_and_the_next_photo_gets_a_fresh_one(tmp_path):
    server = await start(tmp_path, reconstruct=scripted)
    jobs = server.app[SERVER_KEY].jobs
    jobs.idle_seconds = 0.5
    (tmp_path / "store" / "script").write_text("build build")
    try:
        async with aiohttp.ClientSession() as http:
            assert (await reconstructed(http, server))["status"] == "ready"
            pid = jobs.child_pid
            assert pid in reconstruction_processes()
            assert await wait_for(lambda: jobs.child_pid is None and pid not in reconstruction_processes(), 20), "the idle process exited"
            assert (await reconstructed(http, server))["status"] == "ready"
    finally:
        await server.close()


async def test_a_process_killed_while_idle_is_replaced_without_failing_the_next_photo(tmp_path):
    server = await start(tmp_path, reconstruct=scripted)
    jobs = server.app[SERVER_KEY].jobs
    (tmp_path / "store" / "script").write_text("build build")
    try:
        async with aiohttp.ClientSession() as http:
            assert (await reconstructed(http, server))["status"] == "ready"
            pid = jobs.child_pid
            os.kill(pid, signal.SIGKILL)  # as the OOM killer might, between photos
            assert await wait_for(lambda: pid not in reconstruction_processes(), 10)
            assert (await reconstructed(http, server))["status"] == "ready"
            assert jobs.child_pid != pid
    finally:
        await server.close()
