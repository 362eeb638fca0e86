"""The CUDA rasterizer's depth keys, computed on the host as the kernel does (float32 depths,
their bits less the view's floor, clamped): the host's bounds (the box around the means) must keep every key in range
and the order of the keys that of the depths, on fresh random clouds and cameras."""

import math
import os

import numpy as np
import pytest
import torch

from splatcast.engine.cameras import invert_rigid, orbit_camera
from splatcast.kernels.cuda_rasterizer import depth_key_floors


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def points_in_box(rng: np.random.Generator, centre: np.ndarray, half_size: np.ndarray, n: int) -> np.ndarray:
    """Uniform in the box, and its eight corners (where the depth extremes are)."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    inside = rng.uniform(-1, 1, (n, 3))
    return (centre + np.concatenate([corners, inside]) * half_size).astype(np.float32)


def world_to_camera(rng: np.random.Generator, centre: np.ndarray, count: int, distance: tuple[float, float]) -> np.ndarray:
    poses = [
        invert_rigid(orbit_camera(rng.uniform(0, 360), rng.uniform(-60, 60), rng.uniform(*distance), tuple(centre.tolist())))
        for _ in range(count)
    ]
    return torch.stack(poses).numpy()


def kernel_keys(points: np.ndarray, view: np.ndarray, floor: int, bits: int) -> np.ndarray:
    """Depth keys as preprocess writes them, culled entries (behind the near plane) left out."""
    depths = (points @ view[2, :3].T + view[2, 3]).astype(np.float32)
    depths = depths[depths > 0.01]
    words = depths.view(np.uint32).astype(np.int64)
    return np.clip(words - floor, 0, 2**bits - 2), depths


AVATAR = np.array([0.4, 0.9, 0.2])  # half the box of a standing adult's means, metres


@pytest.mark.parametrize("distance", [(2.0, 3.0), (3.0, 8.0)], ids=["avatar-2-3m", "avatar-3-8m"])
def test_keys_of_an_avatar_in_view_fit_24_bits_in_depth_order(rng, distance):
    centre = rng.uniform(-1, 1, 3) + np.array([0.0, 0.9, 0.0])
    points = points_in_box(rng, centre, AVATAR, 200_000)
    views = world_to_camera(rng, centre, 4, distance)
    floors, bits = depth_key_floors(views, tuple(centre.tolist()), tuple(AVATAR.tolist()))
    assert bits == 24
    for view, floor in zip(views, floors):
        words = np.asarray(points @ view[2, :3].T + view[2, 3], dtype=np.float32).view(np.uint32)
        assert (words > floor).all() and (words - floor < 2**24 - 1).all()  # no key clamped
        keys, depths = kernel_keys(points, view, int(floor), bits)
        np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.argsort(depths, kind="stable"))


def test_a_camera_inside_the_cloud_keys_depths_in_31_bits(rng):
    centre = np.zeros(3)
    views = world_to_camera(rng, centre, 2, (0.2, 0.5))
    floors, bits = depth_key_floors(views, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert bits == 31 and floors == [0, 0]
    points = points_in_box(rng, centre, np.ones(3), 50_000)
    keys, depths = kernel_keys(points, views[0], 0, bits)
    np.testing.assert_array_equal(keys, depths.view(np.uint32))  # the float bits themselves


@pytest.mark.parametrize("size", [math.inf, math.nan])
def test_unbounded_clouds_key_depths_in_31_bits(rng, size):
    views = world_to_camera(rng, np.zeros(3), 2, (2.0, 3.0))
    floors, bits = depth_key_floors(views, (0.0, 0.0, 0.0), (0.5, size, 0.5))
    assert bits == 31 and floors == [0, 0]
