"""Frame pacing of a session's track: slots on grids shared by a render loop's tracks, missed
slots skipped rather than queued, a busy track's slot skipped."""

import av
import pytest

from splatcast.engine.cameras import intrinsics_from_fov, orbit_camera, single_view
from splatcast.streaming.encoders import TIME_BASE
from splatcast.streaming.track import AvatarTrack

FPS = 60
PERIOD = 1 / FPS


def track(base: float, late_start: float = 0.0) -> AvatarTrack:
    t = AvatarTrack(single_view(orbit_camera(0.0, 0.0, 3.0), intrinsics_from_fov(40.0, 64, 48), 64, 48), fps=FPS, late_start=late_start)
    t.codec_mime = "video/h264"
    t.pacer.base = base
    return t


async def finish(t: AvatarTrack, job) -> None:
    """The frame encoded, handed over and taken by aiortc's sender: the track is free again."""
    packet = av.Packet(b"\x00\x00\x00\x01")
    packet.time_base = TIME_BASE
    t.deliver(job, [packet], {})
    await t.recv()


async def test_tracks_of_one_loop_come_due_together():
    base = 0.37
    first, second = track(base), track(base)
    await finish(first, first.take_job(1000.004))  # joined mid-slot ...
    await finish(second, second.take_job(1000.011))  # ... and another one later
    assert first.next_slot() == pytest.approx(second.next_slot(), abs=1e-9)
    slot = first.next_slot()
    assert 0 < slot - 1000.011 <= PERIOD
    assert (slot - base) * FPS == pytest.approx(round((slot - base) * FPS), abs=1e-6)
    assert not first.ready(slot - 1e-4) and first.ready(slot) and second.ready(slot)


async def test_a_late_loop_makes_one_late_frame_and_skips_the_rest():
    t = track(0.0)
    await finish(t, t.take_job(10.0))
    late = 10.0 + 3.5 * PERIOD  # slots 1, 2 and 3 have passed
    assert t.ready(late)
    await finish(t, t.take_job(late))
    assert t.next_slot() == pytest.approx(10.0 + 4 * PERIOD)  # the late frame stood for slots 1-3; on to 4
    assert not t.ready(late + 0.1 * PERIOD)


async def test_a_busy_track_skips_its_slot():
    t = track(0.0)
    await finish(t, t.take_job(20.0))
    t.take_job(t.next_slot())  # not finished: still encoding or unsent
    slot = t.next_slot()
    assert not t.ready(slot)
    assert t.frames_skipped == 1
    assert t.next_slot() == pytest.approx(slot + PERIOD)


async def test_a_busy_track_waits_its_late_start_then_starts_late():
    t = track(0.0, late_start=0.25)
    woken = []
    t.on_free = lambda: woken.append(True)
    await finish(t, t.take_job(40.0))
    job = t.take_job(t.next_slot())  # still out at the next slot ...
    slot = t.next_slot()
    assert not t.ready(slot) and t.next_slot() == slot and t.frames_skipped == 0  # ... which waits
    assert t.wake_at(slot) == pytest.approx(slot + 0.25 * PERIOD)
    now = slot + 0.1 * PERIOD
    await finish(t, job)  # out late: the render loop is told at once
    assert woken == [True]
    assert t.ready(now)
    t.take_job(now)
    assert t.next_slot() == pytest.approx(slot + PERIOD)  # the slot after stays on the grid, 0.9 of an interval on
    assert t.frames_skipped == 0


async def test_a_busy_track_skips_its_slot_once_its_late_start_has_passed():
    t = track(0.0, late_start=0.25)
    await finish(t, t.take_job(50.0))
    t.take_job(t.next_slot())
    slot = t.next_slot()
    assert not t.ready(slot + 0.2 * PERIOD) and t.frames_skipped == 0
    assert not t.ready(slot + 0.25 * PERIOD)
    assert t.frames_skipped == 1 and t.next_slot() == pytest.approx(slot + PERIOD)


def test_late_starts_past_a_quarter_interval_are_refused():
    from splatcast.streaming.server import ServerConfig

    with pytest.raises(ValueError, match="between 0 and 0.25"):
        ServerConfig(late_start=0.3)
    with pytest.raises(ValueError, match="between 0 and 0.25"):
        ServerConfig(late_start=-0.1)


async def test_slots_held_up_before_the_connection_sends_are_not_skips():
    t = track(0.0)
    t.take_job(30.0)  # the first frame waits for DTLS: aiortc has not asked for it yet
    assert not t.ready(t.next_slot())
    assert t.frames_skipped == 0


async def test_a_track_follows_its_poses_to_the_grid_just_after_them():
    import dataclasses

    from splatcast.streaming.protocol import SizeLimits, parse_pose
    from splatcast.streaming.viewer import pose_message

    t = track(5.0)
    pose = parse_pose(pose_message(1, 0.0, 64, 48, 3.0, (0.0, 0.8, 0.0)), SizeLimits())
    for seq in range(1, 120):  # a pose every frame, 0.6 of a frame after the loop's grid 0
        t.update_pose(dataclasses.replace(pose, seq=seq, received_at=5.0 + (seq + 0.6) * PERIOD))
    assert t.pacer.grid == 3  # grids at 0, 1/4, 1/2, 3/4 of a frame: 3/4 is the first after 0.6
    await finish(t, t.take_job(5.0 + 120.6 * PERIOD))  # the frame of the newest pose
    for _ in range(3):
        assert (t.next_slot() - 5.0) / PERIOD % 1.0 == pytest.approx(0.75, abs=1e-6)
        await finish(t, t.take_job(t.next_slot()))
