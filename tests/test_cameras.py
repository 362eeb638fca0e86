"""Camera conventions: OpenGL/WebXR <-> OpenCV, projection matrices <-> intrinsics."""

import math

import pytest
import torch

from splatcast.engine.cameras import (
    intrinsics_from_fov,
    intrinsics_from_projection,
    invert_rigid,
    look_at,
    matrix_from_column_major,
    opencv_to_opengl,
    opengl_to_opencv,
    projection_from_intrinsics,
)


def random_rigid(generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
    transform = torch.eye(4)
    transform[:3, :3] = q * torch.sign(torch.det(q))
    transform[:3, 3] = torch.randn(3, generator=generator)
    return transform


def off_axis_projection(left: float, right: float, down: float, up: float, near=0.1, far=100.0) -> torch.Tensor:
    """glFrustum from tangents of the four half-angles, as WebXR headsets report them."""
    l, r, b, t = -left * near, right * near, -down * near, up * near
    return torch.tensor(
        [
            [2 * near / (r - l), 0, (r + l) / (r - l), 0],
            [0, 2 * near / (t - b), (t + b) / (t - b), 0],
            [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, -1, 0],
        ]
    )


def test_invert_rigid_matches_matrix_inverse():
    g = torch.Generator().manual_seed(0)
    transform = random_rigid(g)
    torch.testing.assert_close(invert_rigid(transform), torch.linalg.inv(transform), atol=1e-5, rtol=1e-5)


def test_opengl_camera_looking_down_minus_z_is_an_opencv_camera_looking_down_minus_z():
    camera_to_world_gl = torch.eye(4)  # at the origin, looking down world -z, y up
    camera_to_world_cv = opengl_to_opencv(camera_to_world_gl)
    forward_cv = camera_to_world_cv[:3, 2]
    down_cv = camera_to_world_cv[:3, 1]
    torch.testing.assert_close(forward_cv, torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(down_cv, torch.tensor([0.0, -1.0, 0.0]))
    torch.testing.assert_close(opencv_to_opengl(camera_to_world_cv), camera_to_world_gl)


def test_column_major_reading():
    values = list(range(16))
    m = matrix_from_column_major(values)
    assert m[0, 1] == 4 and m[1, 0] == 1 and m[3, 2] == 11


def test_intrinsics_from_symmetric_projection_by_hand():
    # 90 degree vertical field of view on 200x100 pixels: fy = 50 px, principal point centred.
    projection = off_axis_projection(left=2.0, right=2.0, down=1.0, up=1.0)
    k = intrinsics_from_projection(projection, 200, 100)
    torch.testing.assert_close(k, torch.tensor([[50.0, 0, 100], [0, 50, 50], [0, 0, 1]]))


def test_asymmetric_frustum_moves_the_principal_point():
    # A left eye of a headset: wider towards the nose side is the usual asymmetry.
    projection = off_axis_projection(left=1.0, right=0.8, down=1.2, up=0.9)
    width, height = 180, 210
    k = intrinsics_from_projection(projection, width, height)
    # Tangent extents map to pixels: cx = left / (left + right) * W, cy = up / (up + down) * H.
    assert k[0, 2].item() == pytest.approx(1.0 / 1.8 * width, rel=1e-5)
    assert k[1, 2].item() == pytest.approx(0.9 / 2.1 * height, rel=1e-5)
    assert k[0, 0].item() == pytest.approx(width / 1.8, rel=1e-5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_world_point_lands_on_the_same_pixel_through_both_conventions(seed):
    g = torch.Generator().manual_seed(seed)
    width, height = 320, 240
    projection = off_axis_projection(*(torch.rand(4, generator=g) * 0.8 + 0.4).tolist())
    camera_to_world_gl = random_rigid(g)
    # A point in front of the GL camera (negative z in camera space).
    p_camera_gl = torch.tensor([*(torch.rand(2, generator=g) - 0.5).tolist(), -2.0, 1.0])
    p_world = camera_to_world_gl @ p_camera_gl

    clip = projection @ invert_rigid(camera_to_world_gl) @ p_world
    ndc = clip[:3] / clip[3]
    expected = torch.tensor([(ndc[0] + 1) * width / 2, (1 - ndc[1]) * height / 2])

    k = intrinsics_from_projection(projection, width, height)
    p_cv = invert_rigid(opengl_to_opencv(camera_to_world_gl)) @ p_world
    pixel = (k @ p_cv[:3])[:2] / p_cv[2]
    torch.testing.assert_close(pixel, expected, atol=1e-3, rtol=1e-4)


def test_projection_round_trip():
    k = torch.tensor([[400.0, 0, 170], [0, 410, 115], [0, 0, 1]])
    projection = projection_from_intrinsics(k, 320, 240)
    torch.testing.assert_close(intrinsics_from_projection(projection, 320, 240), k)


def test_look_at_points_the_optical_axis_at_the_target():
    eye, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.0])
    c2w = look_at(eye, target)
    forward = c2w[:3, 2]
    torch.testing.assert_close(forward, (target - eye) / (target - eye).norm())
    assert c2w[1, 1] < 0  # image down points roughly along world -y
    k = intrinsics_from_fov(60, 100, 100)
    assert k[1, 1].item() == pytest.approx(50 / math.tan(math.radians(30)))
