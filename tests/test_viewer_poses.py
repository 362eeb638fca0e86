"""The Python viewer builds its poses without torch, as a browser would: the same matrices as
``engine.cameras`` on fresh random orbits and view sizes, and no torch import in a viewer."""

import os
import random
import subprocess
import sys

import pytest
import torch

from splatcast.engine.cameras import intrinsics_from_fov, opencv_to_opengl, orbit_camera, projection_from_intrinsics
from splatcast.streaming.viewer import _orbit_matrix, _projection


@pytest.fixture
def rng() -> random.Random:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    return random.Random(seed)


def column_major(matrix: torch.Tensor) -> list[float]:
    return matrix.T.flatten().tolist()


def test_orbit_poses_match_engine_cameras(rng):
    for _ in range(50):
        azimuth, radius = rng.uniform(0, 360), rng.uniform(0.5, 10)
        centre = tuple(rng.uniform(-2, 2) for _ in range(3))
        elevation = rng.uniform(-80, 80)
        expected = column_major(opencv_to_opengl(orbit_camera(azimuth, elevation, radius, centre)))
        assert _orbit_matrix(azimuth, radius, centre, elevation) == pytest.approx(expected, abs=1e-5)


def test_projections_match_engine_cameras(rng):
    for _ in range(20):
        fov, width, height = rng.uniform(20, 110), rng.randrange(64, 4096), rng.randrange(64, 4096)
        expected = column_major(projection_from_intrinsics(intrinsics_from_fov(fov, width, height), width, height))
        assert _projection(fov, width, height) == pytest.approx(expected, rel=1e-5)


def test_a_viewer_does_not_import_torch():
    code = "import sys, splatcast.streaming.viewer; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
