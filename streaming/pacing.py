"""When a session's next frame is due: slots on grids shared by a render loop's sessions, each
session on the grid that falls just after its poses arrive.

A pose waits for the next frame slot; with one grid per loop that wait is anywhere up to a frame
interval (16.7 ms at 60 fps), the largest part of pose -> encoded latency. Clients send poses at
their display rate, so their arrivals keep a steady phase against the server's clock: the loop
offers ``GRIDS`` grids a fraction of a frame apart, and each session moves to the one just after
its poses' usual arrival. A pose then waits at most about a quarter frame, and the sessions on
one grid still render in one batched call.
"""

from __future__ import annotations

import cmath
import math

GRIDS = 4
"""Slot grids per render loop, evenly spread over one frame interval."""
POSE_MARGIN = 0.05
"""Fraction of a frame interval between the poses' usual arrival and the slot that takes them:
room for their arrival jitter."""
SMOOTHING = 0.05
"""Weight of each new pose in the running estimate of when poses arrive."""
STEADY = 0.5
"""Above this length the estimate's mean unit vector says the poses keep a phase at the frame
rate; below it (poses at another rate, or irregular) no grid is better, and the session stays."""


class FramePacer:
    """One session's frame slots: ``next_slot``, moved on by ``advance`` as frames are made."""

    def __init__(self, fps: int, base: float = 0.0) -> None:
        self.fps = fps
        self.base = base
        """The render loop's grid 0 (seconds, monotonic clock); grid g is g / GRIDS frames later."""
        self.grid = 0
        self.next_slot = 0.0
        self._arrivals = 0j  # running mean of each arrival's phase as a unit vector

    @property
    def phase(self) -> float:
        return self.base + self.grid / (GRIDS * self.fps)

    def pose_arrived(self, at: float) -> None:
        """Count a pose's arrival time into the estimate and follow it to its grid."""
        turn = 2 * math.pi * ((at - self.base) * self.fps % 1.0)
        self._arrivals += SMOOTHING * (cmath.exp(1j * turn) - self._arrivals)
        if abs(self._arrivals) >= STEADY:
            usual = cmath.phase(self._arrivals) / (2 * math.pi) % 1.0
            self.grid = math.ceil((usual + POSE_MARGIN) * GRIDS) % GRIDS

    def advance(self, now: float) -> None:
        """On from the slot just served (or skipped) to the first slot of the session's grid
        after ``now`` and at least 3/4 of an interval after that slot: a change of grid never
        crowds two frames together, and a tick that came late makes one frame for the slots it
        missed, the next one coming on the grid (missed slots are skipped, never queued)."""
        # 1e-6 of a frame: a time on a slot or bound, up to rounding, counts as on it.
        served = (self.next_slot - self.phase) * self.fps
        after_now = math.floor((now - self.phase) * self.fps + 1e-6) + 1
        spaced = math.ceil(served + 1 - 1 / GRIDS - 1e-6)
        self.next_slot = self.phase + max(after_now, spaced) / self.fps
