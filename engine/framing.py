"""Framing a photographed person for the learned path: SV3D's input view and the LRT's cameras.

SV3D sees the person cut out on white in a square, filling ``FILL`` of it, as its training
renders framed objects; its orbit turns about the person's vertical axis through a centre at
a fixed distance and elevation. Here that is tied to the photo through the fitted body
(``prior.BodyFit``):

- world frame: the fitted body's (``BodyFit.camera_to_body``: y up, facing +z, soles on y = 0);
- orbit centre: the point on the crop centre's ray at the depth of the visible body;
- object frame: the world moved to the orbit centre and scaled by ``extent`` (world units per
  object unit: half the crop's width at the centre's depth), the frame the reconstruction
  transformer's rays, prior and Gaussians live in;
- views: view 0 is the photo's own camera restricted to the crop; a generated view at azimuth
  phi is the photo's camera centre turned by phi about the vertical through the orbit centre
  (right-handed about +y, from +z towards +x, as ``cameras.orbit_camera``), looking at
  the centre, with the crop's focal length and a centred principal point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .cameras import Views, invert_rigid, look_at
from .prior import BodyFit

FILL = 0.85
"""The person's larger side over the crop's side."""


@dataclass(frozen=True)
class Framing:
    """One photo framed for SV3D. image (3, r, r) in [0, 1]; intrinsics (3, 3) of the crop at
    r x r pixels; camera_to_world (4, 4) the photo camera's rigid pose (OpenCV axes); centre (3,)
    the orbit centre and ``extent`` the object frame's unit, both in the world; elevation_deg of
    the photo camera seen from the centre."""

    image: torch.Tensor
    intrinsics: torch.Tensor
    camera_to_world: torch.Tensor
    centre: torch.Tensor
    extent: float
    elevation_deg: float

    @property
    def resolution(self) -> int:
        return self.image.shape[-1]

    def to_object(self, points: torch.Tensor) -> torch.Tensor:
        """World points (N, 3) -> object frame."""
        return (points - self.centre) / self.extent

    def object_views(self, azimuths: torch.Tensor, size: int) -> Views:
        """Views in the object frame at ``size`` x ``size`` pixels: view 0 the photo's crop, then one
        orbit view per azimuth (radians)."""
        scale = size / self.resolution
        intrinsics = self.intrinsics.clone()
        intrinsics[:2] *= scale
        photo = self.camera_to_world.clone()
        photo[:3, 3] = self.to_object(photo[:3, 3])
        poses, ks = [photo], [intrinsics]
        orbit_k = intrinsics.clone()
        orbit_k[:2, 2] = size / 2
        for phi in azimuths.tolist():
            c, s = math.cos(phi), math.sin(phi)
            turn = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
            poses.append(look_at(turn @ photo[:3, 3], torch.zeros(3)))
            ks.append(orbit_k)
        return Views(invert_rigid(torch.stack(poses)), torch.stack(ks), size, size)


def frame_person(rgb: np.ndarray, mask: np.ndarray, fit: BodyFit, resolution: int) -> Framing:
    """Cut the person (``mask`` (H, W) bool) out of ``rgb`` (H, W, 3) in [0, 1] onto white, in a
    square of ``resolution`` pixels centred on the mask's bounding box."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("the person's mask is empty")
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(1, round(max(x1 - x0, y1 - y0) / FILL))
    left, top = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
    cutout = np.where(mask[..., None], rgb[..., :3], 1.0).astype(np.float32)
    height, width = mask.shape
    pad = ((max(0, -top), max(0, top + side - height)), (max(0, -left), max(0, left + side - width)), (0, 0))
    padded = np.pad(cutout, pad, constant_values=1.0)
    square = padded[top + pad[0][0] : top + pad[0][0] + side, left + pad[1][0] : left + pad[1][0] + side]
    interpolation = cv2.INTER_AREA if side > resolution else cv2.INTER_LINEAR
    image = torch.from_numpy(cv2.resize(square, (resolution, resolution), interpolation=interpolation)).permute(2, 0, 1)

    k = fit.intrinsics.float()
    crop_k = k.clone()
    crop_k[:2, 2] -= torch.tensor([left, top], dtype=torch.float32)
    crop_k[:2] *= resolution / side
    vertices = fit.vertices[fit.visible] if bool(fit.visible.any()) else fit.vertices
    depth = float(vertices[:, 2].median())
    centre_pixel = torch.tensor([left + side / 2, top + side / 2])
    centre_camera = torch.cat([(centre_pixel - k[:2, 2]) / k.diagonal()[:2] * depth, torch.tensor([depth])])

    linear, translation = fit.camera_to_body[:3, :3].float(), fit.camera_to_body[:3, 3].float()
    world_per_camera = float(torch.linalg.det(linear)) ** (1 / 3)  # the similarity's scale
    camera_to_world = torch.eye(4)
    camera_to_world[:3, :3] = linear / world_per_camera
    camera_to_world[:3, 3] = translation
    centre = linear @ centre_camera + translation
    extent = side / 2 * depth / float(k[0, 0]) * world_per_camera
    offset = translation - centre
    elevation = math.degrees(math.asin(float(offset[1] / offset.norm())))
    return Framing(image.contiguous(), crop_k, camera_to_world, centre, extent, elevation)
