"""Pure-PyTorch 3D Gaussian splatting: the correctness reference for the CUDA kernels and the
CPU rendering path of the server.

It follows the 3DGS rasterizer (Kerbl et al. 2023) stage by stage, vectorised for the CPU:
1. ``project``: EWA splatting of each 3D covariance into each view, with the usual 0.3 px
   low-pass dilation, SH colour for that view, and an opacity-aware bounding box (the ellipse
   where opacity * exp(-q/2) reaches 1/255, so no tile is touched that no pixel would use).
2. ``rasterize``: (view, tile, depth)-sorted Gaussian/tile pairs, then per tile
   front-to-back alpha compositing: alpha = min(0.99, opacity * exp(-q/2)), skipped below 1/255,
   and a pixel stops at the first Gaussian that would take its transmittance under 1e-4
   (that Gaussian is not blended). Tiles are processed in batches of similar depth complexity,
   a depth slice at a time, and a batch drops out once every pixel in it has saturated.

Pixel centres sit at +0.5 (OpenCV convention, see ``cameras``). Views are batched: a stereo pair
or many sessions' views go through one call.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import torch

from ..engine.cameras import Views
from ..engine.gaussians import GaussianCloud
from .sh import eval_sh_colours

TILE_SIZE = 8
"""Pixels per tile side. Only speed depends on it: on the CPU, small tiles let silhouette tiles
stop early; the CUDA kernels use 16."""
NEAR_PLANE = 0.01
"""Gaussians whose centre is closer than this to the camera plane (metres) are culled."""
LOW_PASS = 0.3
"""Screen-space dilation (px^2) added to every 2D covariance: the anti-aliasing filter of 3DGS."""
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4
FRUSTUM_GUARD = 0.3
"""How far past the image edge (in half-FOV tangents) the Jacobian is linearised, as in gsplat."""

_PAIR_BATCH = 1 << 18
"""Target number of (pixel, Gaussian) evaluations per rasterization step: bounds memory."""
_DEPTH_SLICE = 64
_FIRST_SLICE = 32


@dataclass(frozen=True)
class Projection:
    """Per-(view, Gaussian) screen-space splats; entries with ``visible`` False are culled.

    All tensors are (V, N, ...) except ``opacities`` (N,).
    """

    means2d: torch.Tensor  # (V, N, 2) pixels
    conics: torch.Tensor  # (V, N, 3) inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
    depths: torch.Tensor  # (V, N) camera-space z, metres
    extents: torch.Tensor  # (V, N, 2) half-size of the opacity-aware bounding box, pixels
    colours: torch.Tensor  # (V, N, 3) RGB for this view
    opacities: torch.Tensor  # (N,)
    visible: torch.Tensor  # (V, N) bool


def quaternion_to_rotation(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) from unit wxyz quaternions (N, 4)."""
    w, x, y, z = quats.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)


def covariances_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World-space covariances R S S^T R^T, (N, 3, 3)."""
    rs = quaternion_to_rotation(quats) * scales[:, None, :]
    return rs @ rs.transpose(1, 2)


def project(cloud: GaussianCloud, views: Views) -> Projection:
    """EWA-project every Gaussian into every view (the ``preprocess`` stage of 3DGS)."""
    rotation = views.world_to_camera[:, None, :3, :3]  # (V, 1, 3, 3)
    translation = views.world_to_camera[:, None, :3, 3]
    p_cam = (rotation @ cloud.means[None, :, :, None]).squeeze(-1) + translation  # (V, N, 3)
    x, y, z = p_cam.unbind(-1)

    fx, fy = views.intrinsics[:, 0, 0, None], views.intrinsics[:, 1, 1, None]
    cx, cy = views.intrinsics[:, 0, 2, None], views.intrinsics[:, 1, 2, None]
    in_front = z > NEAR_PLANE
    z_safe = torch.where(in_front, z, torch.ones_like(z))

    # Linearise the perspective projection at a point clamped to just outside the frustum,
    # so that Gaussians far off-screen do not get absurdly stretched footprints.
    guard_x = FRUSTUM_GUARD * 0.5 * views.width / fx
    guard_y = FRUSTUM_GUARD * 0.5 * views.height / fy
    tx = (x / z_safe).clamp(-(cx / fx + guard_x), (views.width - cx) / fx + guard_x) * z_safe
    ty = (y / z_safe).clamp(-(cy / fy + guard_y), (views.height - cy) / fy + guard_y) * z_safe
    zeros = torch.zeros_like(z_safe)
    jacobian = torch.stack(
        [fx / z_safe, zeros, -fx * tx / z_safe**2, zeros, fy / z_safe, -fy * ty / z_safe**2], dim=-1
    ).reshape(*z.shape, 2, 3)

    cov_world = covariances_3d(cloud.quats, cloud.scales)
    cov_cam = rotation @ cov_world[None] @ rotation.transpose(-1, -2)
    cov2d = jacobian @ cov_cam @ jacobian.transpose(-1, -2)
    a = cov2d[..., 0, 0] + LOW_PASS
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + LOW_PASS
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)

    # Opacity-aware bounds: opacity * exp(-q/2) >= 1/255  <=>  q <= 2 ln(255 opacity);
    # the ellipse {q <= q_max} spans sqrt(q_max * var) along each image axis.
    q_max = 2 * torch.log((cloud.opacities / ALPHA_MIN).clamp_min(1.0))
    extents = torch.stack([(q_max * a).sqrt(), (q_max * c).sqrt()], dim=-1)

    on_screen = (
        (means2d[..., 0] + extents[..., 0] > 0)
        & (means2d[..., 0] - extents[..., 0] < views.width)
        & (means2d[..., 1] + extents[..., 1] > 0)
        & (means2d[..., 1] - extents[..., 1] < views.height)
    )
    visible = in_front & (det > 0) & (cloud.opacities >= ALPHA_MIN) & on_screen

    directions = torch.nn.functional.normalize(cloud.means[None] - views.camera_centres[:, None], dim=-1)
    colours = eval_sh_colours(cloud.sh, directions)
    return Projection(means2d, conics, z, extents, colours, cloud.opacities, visible)


@dataclass(frozen=True)
class TileBins:
    """Gaussian/tile pairs sorted by (view, tile, depth).

    ``entries`` indexes the flattened (V * N) projection; ``ranges`` (V * tiles, 2) gives each
    tile's [start, end) in ``entries``.
    """

    entries: torch.Tensor
    ranges: torch.Tensor
    tiles_x: int
    tiles_y: int


def bin_tiles(projection: Projection, width: int, height: int, tile_size: int = TILE_SIZE) -> TileBins:
    """Duplicate each visible splat into every tile its bounding box touches, then sort.

    Splats are ordered by depth first and their pairs made in that order, so one stable sort on
    the (view, tile) index leaves each tile's list front to back.
    """
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    num_views = projection.visible.shape[0]
    entry = projection.visible.flatten().nonzero().squeeze(1)
    entry = entry[projection.depths.flatten()[entry].argsort()]
    centre = projection.means2d.reshape(-1, 2)[entry]
    extent = projection.extents.reshape(-1, 2)[entry]
    lo = ((centre - extent) / tile_size).floor().int()
    hi = ((centre + extent) / tile_size).floor().int()
    limit = torch.tensor([tiles_x - 1, tiles_y - 1], dtype=torch.int32, device=entry.device)
    lo = lo.clamp_min(0).minimum(limit)
    hi = hi.clamp_min(0).minimum(limit)
    span = hi - lo + 1
    counts = span[:, 0] * span[:, 1]

    pair_entry = torch.repeat_interleave(torch.arange(len(entry), device=entry.device), counts)
    first = torch.cumsum(counts, 0, dtype=torch.int64) - counts
    offset = (torch.arange(len(pair_entry), device=entry.device) - first[pair_entry]).int()
    span_x = span[pair_entry, 0]
    tile_x = lo[pair_entry, 0] + offset % span_x
    tile_y = lo[pair_entry, 1] + offset // span_x
    view = (entry // projection.visible.shape[1]).int()[pair_entry]
    tile = (view * tiles_y + tile_y) * tiles_x + tile_x
    sorted_tiles, order = torch.sort(tile, stable=True)

    num_tiles = num_views * tiles_y * tiles_x
    ends = torch.searchsorted(sorted_tiles, torch.arange(1, num_tiles + 1, dtype=torch.int32, device=entry.device))
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    return TileBins(entry[pair_entry[order]], torch.stack([starts, ends], 1), tiles_x, tiles_y)


def blend_slice(
    offset_x: torch.Tensor,
    offset_y: torch.Tensor,
    pixel_x: torch.Tensor,
    pixel_y: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colours: torch.Tensor,
    valid: torch.Tensor,
    t_start: torch.Tensor,
    done: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite one depth slice of K splats over a batch of A tiles of P pixels.

    offset_* (A, K): tile origin minus splat centre, pixels; pixel_* (P,): pixel centres within
    the tile. Returns the colour added (A, P, 3), the transmittance after the slice and the
    updated early-stop flags (A, P).
    """
    dx = pixel_x[None, :, None] + offset_x[:, None, :]
    dy = pixel_y[None, :, None] + offset_y[:, None, :]
    a, b, c = conics.unbind(-1)
    power = -0.5 * (a[:, None] * dx * dx + c[:, None] * dy * dy) - b[:, None] * dx * dy
    alpha = (opacities[:, None, :] * power.exp()).clamp_max(ALPHA_MAX)
    alpha = torch.where((power <= 0) & (alpha >= ALPHA_MIN) & valid[:, None, :], alpha, 0.0)
    t_after = t_start[..., None] * torch.cumprod(1 - alpha, dim=-1)
    t_before = torch.cat([t_start[..., None], t_after[..., :-1]], dim=-1)
    # Transmittance only falls along depth, so ``kept`` is a prefix: the early stop.
    kept = (t_after >= TRANSMITTANCE_MIN) & ~done[..., None]
    weight = torch.where(kept, alpha * t_before, 0.0)
    return torch.bmm(weight, colours), t_start - weight.sum(-1), done | (t_after[..., -1] < TRANSMITTANCE_MIN)


class _Blender:
    """``blend_slice``, fused by torch.compile where a compiler works, else run eagerly.

    Fusing the ~20 elementwise passes into one loop nest is 4-6x faster on the CPU; the eager
    function stays the definition (tests compare the two).
    """

    def __init__(self) -> None:
        self._compiled = None
        self.fused = os.environ.get("SPLATCAST_NO_COMPILE") != "1"

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tiles = args[0].shape[0]
        if tiles == 1:
            # torch.compile specialises size-1 dimensions; padding to two avoids a recompile.
            args = tuple(a if a.ndim == 1 else a.expand(2, *a.shape[1:]) for a in args)
            return tuple(out[:1] for out in self._run(*args))
        return self._run(*args)

    def _run(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.fused:
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(blend_slice, dynamic=True)
                return self._compiled(*args)
            except Exception as error:  # no C++ compiler, unsupported platform, ...
                warnings.warn(f"torch.compile unavailable ({error!r}); rendering eagerly", stacklevel=2)
                self.fused = False
        return blend_slice(*args)


_blend = _Blender()


def rasterize(
    projection: Projection,
    bins: TileBins,
    width: int,
    height: int,
    background: torch.Tensor,
    tile_size: int = TILE_SIZE,
) -> torch.Tensor:
    """Front-to-back compositing of the binned splats: (V, H, W, 3) float."""
    num_views = projection.visible.shape[0]
    tiles_per_view = bins.tiles_x * bins.tiles_y
    pixels_per_tile = tile_size * tile_size
    image = background.expand(num_views * tiles_per_view, pixels_per_tile, 3).clone()

    means2d = projection.means2d.reshape(-1, 2)
    conics = projection.conics.reshape(-1, 3)
    colours = projection.colours.reshape(-1, 3)
    opacities = projection.opacities.repeat(num_views)

    local = torch.arange(tile_size, dtype=means2d.dtype, device=means2d.device) + 0.5
    pixel_y, pixel_x = torch.meshgrid(local, local, indexing="ij")
    pixel_x, pixel_y = pixel_x.flatten(), pixel_y.flatten()

    counts = bins.ranges[:, 1] - bins.ranges[:, 0]
    busy = counts.nonzero().squeeze(1)
    busy = busy[counts[busy].argsort(descending=True)]
    start = 0
    while start < len(busy):
        # A batch of tiles of similar depth complexity, sized to the evaluation budget.
        depth = int(counts[busy[start]])
        batch_size = max(1, _PAIR_BATCH // (pixels_per_tile * min(depth, _FIRST_SLICE)))
        tiles = busy[start : start + batch_size]
        start += batch_size
        view_tile = tiles % tiles_per_view
        origin_x = (view_tile % bins.tiles_x * tile_size).to(means2d.dtype)
        origin_y = (view_tile // bins.tiles_x * tile_size).to(means2d.dtype)
        first = bins.ranges[tiles, 0]
        tile_counts = counts[tiles]

        colour = torch.zeros(len(tiles), pixels_per_tile, 3, dtype=means2d.dtype, device=means2d.device)
        transmittance = torch.ones(len(tiles), pixels_per_tile, dtype=means2d.dtype, device=means2d.device)
        done = torch.zeros(len(tiles), pixels_per_tile, dtype=torch.bool, device=means2d.device)
        active = torch.arange(len(tiles), device=means2d.device)
        slice_start, slice_size = 0, _FIRST_SLICE
        while slice_start < depth:
            # Opaque surfaces saturate a pixel within a few splats: start with a thin slice and
            # widen it for the tiles that go on (silhouettes), so few Python steps are taken.
            k = torch.arange(slice_start, slice_start + slice_size, device=means2d.device)  # padded: few shapes
            slice_start, slice_size = slice_start + slice_size, min(2 * slice_size, _DEPTH_SLICE)
            valid = k[None, :] < tile_counts[active, None]
            idx = bins.entries[(first[active, None] + k[None, :]).clamp_max(len(bins.entries) - 1)]
            added, transmittance[active], done[active] = _blend(
                origin_x[active, None] - means2d[idx, 0],
                origin_y[active, None] - means2d[idx, 1],
                pixel_x,
                pixel_y,
                conics[idx],
                opacities[idx],
                colours[idx],
                valid,
                transmittance[active],
                done[active],
            )
            colour[active] += added
            active = active[~done[active].all(1)]
            if len(active) == 0:
                break
        image[tiles] = colour + transmittance[..., None] * background

    image = image.reshape(num_views, bins.tiles_y, bins.tiles_x, tile_size, tile_size, 3)
    image = image.permute(0, 1, 3, 2, 4, 5).reshape(num_views, bins.tiles_y * tile_size, bins.tiles_x * tile_size, 3)
    return image[:, :height, :width]


def render(
    cloud: GaussianCloud,
    views: Views,
    background: tuple[float, float, float] | torch.Tensor = (0.0, 0.0, 0.0),
    tile_size: int = TILE_SIZE,
) -> torch.Tensor:
    """Render every view of ``views``: (V, H, W, 3) float32, linear in the SH colours.

    Runs on the device of ``cloud``; ``views`` are moved there. ``tile_size`` changes only the
    speed, never the image: smaller tiles stop earlier at silhouettes on the CPU.
    """
    views = views.to(cloud.device)
    background = torch.as_tensor(background, dtype=torch.float32, device=cloud.device)
    if len(cloud) == 0:
        return background.expand(len(views), views.height, views.width, 3).clone()
    projection = project(cloud, views)
    bins = bin_tiles(projection, views.width, views.height, tile_size)
    return rasterize(projection, bins, views.width, views.height, background, tile_size)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 1] -> uint8 with rounding, as the CUDA kernels write it."""
    return (image * 255 + 0.5).clamp(0, 255).to(torch.uint8)
