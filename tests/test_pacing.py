"""Frame slots placed just after a session's poses arrive (``streaming.pacing``), on fresh
random arrival phases and jitter each run."""

import random

import pytest

from splatcast.streaming.pacing import GRIDS, POSE_MARGIN, FramePacer

FPS = 60
PERIOD = 1 / FPS


def paced(base: float, arrival_phase: float, poses: int = 200, jitter: float = 0.0, rng=None) -> tuple[FramePacer, list[float]]:
    """A pacer fed poses arriving once a frame at ``arrival_phase`` (fraction of a frame after
    ``base``), with up to ``jitter`` frames of noise; and their arrival times."""
    pacer = FramePacer(FPS, base)
    arrivals = [base + (k + arrival_phase + (rng.uniform(-jitter, jitter) if jitter else 0.0)) * PERIOD for k in range(poses)]
    for at in arrivals:
        pacer.pose_arrived(at)
    return pacer, arrivals


@pytest.mark.parametrize("trial", range(5))
def test_steady_poses_wait_at_most_a_grid_step_for_their_slot(trial):
    rng = random.Random()
    base, phase = rng.uniform(0, 100), rng.random()
    pacer, arrivals = paced(base, phase, jitter=0.02, rng=rng)
    # The slot that takes the next pose: the first one at or after it, on the pacer's grid.
    nominal = arrivals[-1] + PERIOD
    pacer.advance(nominal - PERIOD)  # as after the frame one interval earlier
    while pacer.next_slot < nominal:
        pacer.advance(pacer.next_slot)
    wait = (pacer.next_slot - nominal) / PERIOD
    assert POSE_MARGIN - 0.03 <= wait <= 1 / GRIDS + POSE_MARGIN + 0.03, (phase, pacer.grid, wait)


def test_poses_at_another_rate_leave_the_grid_alone():
    pacer = FramePacer(FPS, 10.0)
    for k in range(300):  # 90 Hz: no steady phase against 60 fps slots
        pacer.pose_arrived(10.0 + k / 90 + 0.3 * PERIOD)
    assert pacer.grid == 0


@pytest.mark.parametrize("trial", range(5))
def test_a_change_of_grid_never_crowds_frames_and_never_queues_them(trial):
    """Frames made on time stay at least 3/4 of an interval apart across grid changes; a tick
    that comes late makes one frame, and the next is the following slot after it (none queued)."""
    rng = random.Random()
    pacer = FramePacer(FPS, rng.uniform(0, 100))
    now = pacer.base + 1.0
    pacer.advance(now)
    on_time_gaps, late_ticks, was_late = [], 0, False
    for _ in range(400):
        if rng.random() < 0.05:  # the client's cadence moved: a new grid
            pacer.grid = rng.randrange(GRIDS)
        late = rng.random() < 0.1
        previous, slot = now, pacer.next_slot
        now = slot + (rng.uniform(0.1, 2.5) * PERIOD if late else 0.0)
        pacer.advance(now)
        assert now < pacer.next_slot <= now + (2 - 1 / GRIDS) * PERIOD + 1e-9
        if late:
            late_ticks += 1
        elif not was_late:
            on_time_gaps.append((now - previous) / PERIOD)
        was_late = late
    assert late_ticks > 0
    assert min(on_time_gaps) >= 1 - 1 / GRIDS - 1e-6
