"""Pinhole views and the conversions between the two camera conventions splatcast meets.

- OpenCV (what every rasterizer here uses, as gsplat does): camera x right, y down, looking
  down +z; pixel (0, 0) is the top-left corner of the top-left pixel, so its centre is (0.5, 0.5).
- OpenGL / WebXR (what clients send): camera x right, y up, looking down -z; projection matrices
  map to NDC in [-1, 1]^3 with y up.

Matrices are row-major torch tensors in Python. WebXR hands out column-major ``Float32Array(16)``s
(``XRRigidTransform.matrix``, ``XRView.projectionMatrix``); ``matrix_from_column_major`` reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Flips camera y and z: OpenGL camera axes <-> OpenCV camera axes (its own inverse).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass(frozen=True)
class Views:
    """A batch of V pinhole views of one resolution, in the OpenCV convention.

    world_to_camera (V, 4, 4) rigid transforms; intrinsics (V, 3, 3) with fx, fy, cx, cy in pixels.
    """

    world_to_camera: torch.Tensor
    intrinsics: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        v = self.world_to_camera.shape[0]
        if self.world_to_camera.shape != (v, 4, 4) or self.intrinsics.shape != (v, 3, 3):
            raise ValueError(
                f"views need (V,4,4) and (V,3,3) matrices, got {tuple(self.world_to_camera.shape)} "
                f"and {tuple(self.intrinsics.shape)}"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"view size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return self.world_to_camera.shape[0]

    @property
    def camera_centres(self) -> torch.Tensor:
        """(V, 3) camera centres in world space."""
        return invert_rigid(self.world_to_camera)[:, :3, 3]

    def to(self, device: torch.device | str) -> Views:
        return Views(self.world_to_camera.to(device), self.intrinsics.to(device), self.width, self.height)

    @staticmethod
    def concat(views: list[Views]) -> Views:
        """Stack several batches of one resolution into one batch."""
        width, height = views[0].width, views[0].height
        if any((v.width, v.height) != (width, height) for v in views):
            raise ValueError("views of different resolutions cannot share a batch")
        return Views(
            torch.cat([v.world_to_camera for v in views]), torch.cat([v.intrinsics for v in views]), width, height
        )


def invert_rigid(transform: torch.Tensor) -> torch.Tensor:
    """Inverse of (..., 4, 4) rigid transforms [R t; 0 1] without a general matrix inverse."""
    rotation = transform[..., :3, :3]
    translation = transform[..., :3, 3:]
    inverse = torch.zeros_like(transform)
    inverse[..., :3, :3] = rotation.transpose(-1, -2)
    inverse[..., :3, 3:] = -rotation.transpose(-1, -2) @ translation
    inverse[..., 3, 3] = 1.0
    return inverse


def opengl_to_opencv(camera_to_world_gl: torch.Tensor) -> torch.Tensor:
    """Camera-to-world with OpenGL camera axes -> the same pose with OpenCV camera axes."""
    return camera_to_world_gl @ _GL_TO_CV.to(camera_to_world_gl)


def opencv_to_opengl(camera_to_world_cv: torch.Tensor) -> torch.Tensor:
    return camera_to_world_cv @ _GL_TO_CV.to(camera_to_world_cv)


def matrix_from_column_major(values: list[float] | torch.Tensor) -> torch.Tensor:
    """A 4x4 matrix from the 16 column-major numbers WebXR and WebGL use."""
    return torch.as_tensor(values, dtype=torch.float32).reshape(4, 4).T.contiguous()


def intrinsics_from_projection(projection: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """OpenCV intrinsics (..., 3, 3) from OpenGL projection matrices (..., 4, 4).

    Handles asymmetric (off-axis) frusta as VR headsets use: the principal point moves with
    P[0, 2] and P[1, 2]. From x_ndc = P00 x/z_cv - P02 and y_ndc = -P11 y/z_cv - P12, with
    u = (x_ndc + 1) W / 2 and v = (1 - y_ndc) H / 2.
    """
    fx = projection[..., 0, 0] * width / 2
    fy = projection[..., 1, 1] * height / 2
    cx = (1 - projection[..., 0, 2]) * width / 2
    cy = (1 + projection[..., 1, 2]) * height / 2
    intrinsics = torch.zeros(*projection.shape[:-2], 3, 3, dtype=projection.dtype, device=projection.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = cx
    intrinsics[..., 1, 2] = cy
    intrinsics[..., 2, 2] = 1
    return intrinsics


def projection_from_intrinsics(
    intrinsics: torch.Tensor, width: int, height: int, near: float = 0.01, far: float = 100.0
) -> torch.Tensor:
    """The OpenGL projection matrix (4, 4) that ``intrinsics_from_projection`` inverts."""
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    projection = torch.zeros(4, 4, dtype=intrinsics.dtype)
    projection[0, 0] = 2 * fx / width
    projection[1, 1] = 2 * fy / height
    projection[0, 2] = 1 - 2 * cx / width
    projection[1, 2] = 2 * cy / height - 1
    projection[2, 2] = -(far + near) / (far - near)
    projection[2, 3] = -2 * far * near / (far - near)
    projection[3, 2] = -1
    return projection


def intrinsics_from_fov(vertical_fov_deg: float, width: int, height: int) -> torch.Tensor:
    """Square-pixel intrinsics with the principal point at the image centre."""
    focal = height / (2 * math.tan(math.radians(vertical_fov_deg) / 2))
    return torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float32)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """OpenCV camera-to-world (4, 4) at ``eye`` looking at ``target``, with world ``up`` (default +y)."""
    up = torch.tensor([0.0, 1.0, 0.0]) if up is None else up
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    down = torch.linalg.cross(forward, right)
    camera_to_world = torch.eye(4)
    camera_to_world[:3, 0] = right
    camera_to_world[:3, 1] = down
    camera_to_world[:3, 2] = forward
    camera_to_world[:3, 3] = eye
    return camera_to_world


def orbit_camera(
    azimuth_deg: float, elevation_deg: float, radius: float, target: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> torch.Tensor:
    """OpenCV camera-to-world on a sphere around ``target``; azimuth 0 sits on +z looking at -z."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    centre = torch.tensor(target, dtype=torch.float32)
    offset = torch.tensor([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)]) * radius
    return look_at(centre + offset, centre)


def single_view(camera_to_world: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int) -> Views:
    """A batch of one view from an OpenCV camera-to-world pose."""
    return Views(invert_rigid(camera_to_world)[None], intrinsics[None], width, height)


def frame_bounds(lo: torch.Tensor, hi: torch.Tensor, vertical_fov_deg: float) -> tuple[tuple[float, float, float], float]:
    """Orbit centre and radius at which a box (lo, hi) fits a view of the given field of view."""
    centre = (lo + hi) / 2
    half_size = max(float((hi - lo).max()) / 2, 0.1)
    radius = 1.2 * half_size / math.tan(math.radians(vertical_fov_deg) / 2) + float(hi[2] - lo[2]) / 2
    return tuple(centre.tolist()), radius
