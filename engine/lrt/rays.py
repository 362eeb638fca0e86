"""Plücker ray maps: the per-pixel camera encoding the reconstruction transformer reads.

Each pixel's ray (origin o = the camera centre, unit direction d through the pixel centre) is
given as the six numbers (o x d, d), LGM's order. They say where the ray runs independently of
where along it o sits, so every view is described in one frame, the object frame, with no
camera matrices in the network.
"""

from __future__ import annotations

import torch

from ..cameras import Views, invert_rigid


def plucker_rays(views: Views) -> torch.Tensor:
    """(V, 6, H, W) Plücker coordinates of the rays through the centres of each view's pixels
    (OpenCV cameras: pixel (0, 0)'s centre is at (0.5, 0.5))."""
    device = views.world_to_camera.device
    v, u = torch.meshgrid(
        torch.arange(views.height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(views.width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)
    camera_to_world = invert_rigid(views.world_to_camera.float())
    directions = pixels @ torch.linalg.inv(views.intrinsics.float()).transpose(-1, -2)  # (V, HW, 3), camera axes
    directions = torch.nn.functional.normalize(directions @ camera_to_world[:, :3, :3].transpose(-1, -2), dim=-1)
    origins = camera_to_world[:, None, :3, 3].expand_as(directions)
    rays = torch.cat([torch.linalg.cross(origins, directions, dim=-1), directions], dim=-1)
    return rays.transpose(1, 2).reshape(len(views), 6, views.height, views.width)
