"""The weight-free reconstruction: a photo to a Gaussian avatar with no learned weights at all.

It is what ``splatcast`` does when no checkpoints are configured, and how the bundled sample
avatar is made. From the person's mask and a body model fitted to it (``prior.fit_body``):

1. Surfaces. The fitted body, rasterised into the photo's camera, gives a front and a back depth
   per pixel where it covers the mask. Silhouette inflation covers the rest (hair, loose
   clothes) and rounds the whole shape: u solves the Poisson problem laplacian(u) = -2 inside
   the mask with u = 0 on its outline, so sqrt(u) is the half-thickness of a round cross
   section as wide as the mask is there (a tube of radius r gets exactly r); it is flattened by
   ``INFLATION_DEPTH`` since people are shallower than wide. The centre depth is the body's,
   carried harmonically across pixels the body does not cover. The front and back surfaces
   are the further out of the body's and the inflated ones. Past the photo's frame the mask
   is taken to continue (no outline there), and the cut where the frame crops the person is
   closed by a cap.
2. Gaussians. One flat Gaussian per pixel on each surface, spanning that pixel's patch of
   surface (its two axes are the surface's derivatives along the pixel grid, so splats on
   steep slopes stretch to meet the next pixel), plus a few along the outline and the cap to
   close the side between the two surfaces.
3. Colour. The front takes the photo's colour (averaged over the person's pixels only, so the
   background does not bleed in); the back takes a heavily blurred copy of it, and hair colour
   (sampled above the face) behind the head, SH degree 0.

The result is moved into the world frame: upright as the fitted body stands, soles of the
fitted body on y = 0, facing +z, its bounding box centred on x = z = 0.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import roma
import torch
from scipy import ndimage, sparse
from scipy.sparse.linalg import spsolve

from .gaussians import GaussianCloud, rgb_to_sh0
from .prior import BodyFit, BodyModel, fit_body
from .segmentation import Segmentation, segment_person

DEFAULT_NUM_GAUSSIANS = 50_000
"""Sized to stream at full rate from the CPU renderer; use 100k-300k on a GPU."""
MIN_NUM_GAUSSIANS = 100
INFLATION_DEPTH = 0.6
"""Inflated half-thickness over half-width: bodies, heads and hair are shallower than wide."""
SPLAT_SIGMA = 0.6
"""Gaussian standard deviation along the surface, in pixel footprints: neighbours overlap."""
SPLAT_THICKNESS = 0.15
"""Standard deviation across the surface, in pixel footprints."""
MAX_STRETCH = 3.0
"""A splat spans at most this many pixel footprints along a steep surface."""
OPACITY = 0.98
HAIR_SHADE = 0.85
BACK_BLUR = 0.08
"""The back's colour blur, as a fraction of the person's larger side in the photo."""


def reconstruct(
    image: np.ndarray,
    segmentation: Segmentation | None = None,
    fit: BodyFit | None = None,
    body_model: BodyModel | None = None,
    num_gaussians: int = DEFAULT_NUM_GAUSSIANS,
    seed: int = 0,
) -> GaussianCloud:
    """A Gaussian avatar of at most ``num_gaussians`` (SH degree 0) from a photo.

    ``image`` is float RGB(A) in [0, 1] from ``images.load_image``; ``segmentation`` and ``fit``
    are computed when not given (``fit_body`` with ``body_model``, default Anny).
    """
    if num_gaussians < MIN_NUM_GAUSSIANS:
        raise ValueError(f"num_gaussians must be at least {MIN_NUM_GAUSSIANS}, got {num_gaussians}")
    segmentation = segment_person(image) if segmentation is None else segmentation
    fit = fit_body(segmentation, body_model) if fit is None else fit
    # Size the pixel grid to the budget: the side splats' share is only known once built.
    scale = math.sqrt(num_gaussians / (2.2 * max(1, int(segmentation.mask.sum()))))
    for _ in range(3):
        grid = _WorkGrid(image[..., :3], segmentation, fit, scale)
        front, back = grid.surfaces()
        colours_front = grid.colour
        colours_back = grid.back_colour()
        parts = [
            grid.splats(front, colours_front),
            grid.splats(back, colours_back),
            grid.side_splats(front, back, colours_front, colours_back),
        ]
        count = sum(len(p[0]) for p in parts)
        if count <= num_gaussians:
            break
        scale *= 0.995 * math.sqrt(num_gaussians / count)
    means, covariance_axes, colours = (torch.cat(p) for p in zip(*parts))
    if len(means) > num_gaussians:
        keep = torch.randperm(len(means), generator=torch.Generator().manual_seed(seed))[:num_gaussians]
        means, covariance_axes, colours = means[keep], covariance_axes[keep], colours[keep]
    return _to_world(means, covariance_axes, colours, fit)


class _WorkGrid:
    """The photo resampled so the person has about as many pixels as the Gaussian budget needs."""

    def __init__(self, rgb: np.ndarray, segmentation: Segmentation, fit: BodyFit, scale: float) -> None:
        height, width = segmentation.mask.shape
        self.width, self.height = max(8, round(width * scale)), max(8, round(height * scale))
        self.intrinsics = fit.intrinsics.clone()
        self.intrinsics[0] *= self.width / width
        self.intrinsics[1] *= self.height / height
        coverage = cv2.resize(segmentation.mask.astype(np.float32), (self.width, self.height), interpolation=cv2.INTER_AREA)
        self.mask = coverage >= 0.5
        summed = cv2.resize(rgb * segmentation.mask[..., None], (self.width, self.height), interpolation=cv2.INTER_AREA)
        self.colour = summed / np.maximum(coverage, 1e-6)[..., None]
        self.fit = fit
        self.focal = float(self.intrinsics[0, 0])
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32) + 0.5
        self.rays = np.stack(
            [(u - float(self.intrinsics[0, 2])) / self.focal, (v - float(self.intrinsics[1, 2])) / float(self.intrinsics[1, 1]), np.ones_like(u)], -1
        )
        face = segmentation.face_box
        self.face = None if face is None else tuple(f * s for f, s in zip(face, (self.width / width, self.height / height) * 2))

    def surfaces(self) -> tuple[np.ndarray, np.ndarray]:
        """Front and back depth maps (H, W) in metres along the optical axis, NaN off the mask."""
        body_front, body_back = _rasterise_depth(self.fit.vertices, self.fit.faces, self.intrinsics, self.width, self.height)
        body = np.isfinite(body_front) & self.mask
        centre = np.where(body, (body_front + body_back) / 2, 0.0)
        if body.any():
            centre = _harmonic_fill(self.mask, body, centre)
        else:
            centre = np.full(self.mask.shape, float(self.fit.vertices[:, 2].median()))
        half_px = np.sqrt(np.maximum(_poisson_inflation(self.mask), 0.0))
        half = INFLATION_DEPTH * half_px * centre / self.focal
        front = np.where(body, np.minimum(body_front, centre - half), centre - half)
        back = np.where(body, np.maximum(body_back, centre + half), centre + half)
        front, back = _smooth_in_mask(front, self.mask), _smooth_in_mask(back, self.mask)
        return np.where(self.mask, front, np.nan), np.where(self.mask, back, np.nan)

    def back_colour(self) -> np.ndarray:
        """A plausible back: the front blurred wide; behind the head, the hair above the face
        tiled over it (mirrored, so tiles meet without seams; softened and darkened a little, as
        the back of a head is seen in its own shadow)."""
        ys, xs = np.nonzero(self.mask)
        sigma = BACK_BLUR * max(ys.max() - ys.min(), xs.max() - xs.min(), 1)
        weight = self.mask.astype(np.float32)
        blurred = cv2.GaussianBlur(self.colour * weight[..., None], (0, 0), sigma)
        blurred /= np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-6)[..., None]
        if self.face is None:
            return blurred
        x, y, w, h = self.face
        top = int(ys.min())
        rows = np.arange(max(top, round(y - 0.6 * h)), max(top + 1, round(y - 0.1 * h)))
        cols = np.arange(max(0, round(x + 0.1 * w)), min(self.width, round(x + 0.9 * w)))
        band = self.mask[rows][:, cols]
        if len(rows) < 2 or len(cols) < 2 or band.mean() < 0.8:
            return blurred
        v, u = np.mgrid[0 : self.height, 0 : self.width]
        hair = self.colour[rows[_mirrored(v - rows[0], len(rows))], cols[_mirrored(u - cols[0], len(cols))]]
        hair = cv2.GaussianBlur(hair, (0, 0), 0.02 * w) * HAIR_SHADE
        # An ellipse over the head down to the chin, with a soft edge.
        distance = np.hypot((u + 0.5 - (x + w / 2)) / (0.75 * w), (v + 0.5 - (y + 0.35 * h)) / (0.75 * h))
        head = np.clip((1.0 - distance) * 8.0 + 0.5, 0.0, 1.0)[..., None]
        return head * hair + (1 - head) * blurred

    def splats(self, depth: np.ndarray, colours: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One flat Gaussian per masked pixel of a depth map: centres, covariance axes (N, 3, 3), colours."""
        points = self.rays * depth[..., None]
        footprint = depth / self.focal
        tangents = [_derivative(points, axis, self.mask) for axis in (1, 0)]
        limit = (MAX_STRETCH * footprint)[..., None]
        tangents = [t * np.minimum(1.0, limit / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)) for t in tangents]
        normal = np.cross(tangents[0], tangents[1])
        normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
        axes = np.stack(
            [SPLAT_SIGMA * tangents[0], SPLAT_SIGMA * tangents[1], SPLAT_THICKNESS * footprint[..., None] * normal], -1
        )
        m = self.mask
        return (torch.from_numpy(points[m]).float(), torch.from_numpy(axes[m]).float(), torch.from_numpy(colours[m]).float())

    def side_splats(
        self, front: np.ndarray, back: np.ndarray, colours_front: np.ndarray, colours_back: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Round Gaussians closing the gap between front and back along the outline and the frame cut.

        Spaced two footprints apart and twice as wide as the surface splats: the side is seen
        edge-on from the front and only from the side does its density show.
        """
        outline = self.mask & ~ndimage.binary_erosion(self.mask, border_value=0)
        ys, xs = np.nonzero(outline)
        near, far = front[ys, xs], back[ys, xs]
        step = 2 * near / self.focal
        layers = np.maximum(0, np.floor((far - near) / step).astype(int) - 1)
        index = np.repeat(np.arange(len(ys)), layers)
        if len(index) == 0:
            empty = torch.zeros(0, 3)
            return empty, torch.zeros(0, 3, 3), empty
        layer = np.arange(len(index)) - np.repeat(np.cumsum(layers) - layers, layers) + 1  # 1..n per pixel
        fraction = (layer / (layers[index] + 1))[:, None]
        ys, xs = ys[index], xs[index]
        depth = near[index] + fraction[:, 0] * (far[index] - near[index])
        points = self.rays[ys, xs] * depth[:, None]
        sigma = 2 * SPLAT_SIGMA * depth / self.focal
        axes = np.eye(3)[None] * sigma[:, None, None]
        colours = (1 - fraction) * colours_front[ys, xs] + fraction * colours_back[ys, xs]
        return torch.from_numpy(points).float(), torch.from_numpy(axes).float(), torch.from_numpy(colours).float()


def _mirrored(index: np.ndarray, n: int) -> np.ndarray:
    """Indices into n items, repeating back and forth: 0, 1, .., n-1, n-1, .., 0, 0, 1, .."""
    k = index % (2 * n)
    return np.where(k < n, k, 2 * n - 1 - k)


def _rasterise_depth(
    vertices: torch.Tensor, faces: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and farthest mesh depth per pixel (NaN where the mesh does not project).

    Points are sampled on every triangle densely enough (about 3 per covered pixel) that the
    projected mesh leaves no holes, and min/max-reduced into their pixels.
    """
    corners = vertices[faces]  # (F, 3, 3)
    z = corners[..., 2].clamp_min(1e-3)
    pixels = corners[..., :2] / z[..., None] * intrinsics.diagonal()[:2] + intrinsics[:2, 2]
    edge_a, edge_b = pixels[:, 1] - pixels[:, 0], pixels[:, 2] - pixels[:, 0]
    area = 0.5 * (edge_a[:, 0] * edge_b[:, 1] - edge_a[:, 1] * edge_b[:, 0]).abs()
    samples = (3 * area + 3).ceil().clamp(max=4096).long()
    triangle = torch.repeat_interleave(torch.arange(len(faces)), samples)
    generator = torch.Generator().manual_seed(0)
    r1, r2 = torch.rand(len(triangle), generator=generator), torch.rand(len(triangle), generator=generator)
    s = r1.sqrt()
    weights = torch.stack([1 - s, s * (1 - r2), s * r2], 1)  # uniform barycentric samples
    points = (corners[triangle] * weights[..., None]).sum(1)
    uv = (points[:, :2] / points[:, 2:].clamp_min(1e-3) * intrinsics.diagonal()[:2] + intrinsics[:2, 2]).floor().long()
    inside = (points[:, 2] > 1e-3) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    flat = uv[inside, 1] * width + uv[inside, 0]
    depth = points[inside, 2].double()
    front = torch.full((height * width,), math.inf, dtype=torch.float64).scatter_reduce(0, flat, depth, "amin")
    back = torch.full((height * width,), -math.inf, dtype=torch.float64).scatter_reduce(0, flat, depth, "amax")
    front, back = front.reshape(height, width).numpy(), back.reshape(height, width).numpy()
    covered = np.isfinite(front)
    return np.where(covered, front, np.nan), np.where(covered, back, np.nan)


def _grid_laplacian(mask: np.ndarray, outline_is_fixed: bool) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The 5-point Laplacian over the mask's pixels, and their flat indices.

    Neighbours outside the frame are left out (a zero-flux edge: the person continues past
    the photo). Neighbours in the frame but off the mask are Dirichlet zeros when
    ``outline_is_fixed``, else left out too.
    """
    height, width = mask.shape
    index = -np.ones(mask.shape, np.int64)
    ys, xs = np.nonzero(mask)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, diagonal = [], [], np.zeros(len(ys))
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ny, nx = ys + dy, xs + dx
        in_frame = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        neighbour = np.full(len(ys), -1)
        neighbour[in_frame] = index[ny[in_frame], nx[in_frame]]
        on_mask = neighbour >= 0
        rows.append(np.nonzero(on_mask)[0])
        cols.append(neighbour[on_mask])
        diagonal += on_mask | (in_frame & outline_is_fixed)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    n = len(ys)
    laplacian = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)) - sparse.diags(diagonal)
    return laplacian, index


def _poisson_inflation(mask: np.ndarray) -> np.ndarray:
    """u with laplacian(u) = -2 on the mask, u = 0 on its outline (pixels^2); zero off the mask."""
    laplacian, index = _grid_laplacian(mask, outline_is_fixed=True)
    # A tiny pull to zero keeps a mask that touches no outline (all frame) solvable.
    system = laplacian - 1e-6 * sparse.identity(laplacian.shape[0])
    u = spsolve(system.tocsc(), -2.0 * np.ones(laplacian.shape[0]))
    return np.where(mask, u[np.maximum(index, 0)], 0.0)


def _harmonic_fill(mask: np.ndarray, known: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` where ``known``, carried smoothly (harmonically) over the rest of the mask."""
    laplacian, index = _grid_laplacian(mask, outline_is_fixed=False)
    ys, xs = np.nonzero(mask)
    fixed = known[ys, xs]
    # Known pixels become identity rows; a faint pull to the mean keeps islands without any solvable.
    unknown = sparse.diags((~fixed).astype(float))
    system = sparse.diags(fixed.astype(float)) + unknown @ (laplacian - 1e-6 * sparse.identity(len(ys)))
    mean = float(values[known].mean())
    rhs = np.where(fixed, values[ys, xs], -1e-6 * mean)
    solution = spsolve(system.tocsc(), rhs)
    return np.where(mask, solution[np.maximum(index, 0)], mean)


def _smooth_in_mask(values: np.ndarray, mask: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    weight = mask.astype(np.float64)
    filled = np.where(mask, values, 0.0)
    return ndimage.gaussian_filter(filled, sigma) / np.maximum(ndimage.gaussian_filter(weight, sigma), 1e-9)


def _derivative(points: np.ndarray, axis: int, mask: np.ndarray) -> np.ndarray:
    """d(points)/d(pixel) along ``axis``: central where both neighbours are on the mask, else one-sided."""
    forward = np.roll(points, -1, axis) - points
    backward = points - np.roll(points, 1, axis)
    has_next = np.roll(mask, -1, axis)
    has_prev = np.roll(mask, 1, axis)
    edge = [slice(None)] * 2
    edge[axis] = -1
    has_next[tuple(edge)] = False
    edge[axis] = 0
    has_prev[tuple(edge)] = False
    both = (has_next & has_prev)[..., None]
    result = np.where(both, (forward + backward) / 2, np.where(has_next[..., None], forward, backward))
    return np.where((has_next | has_prev)[..., None], result, 0.0)


def _to_world(means: torch.Tensor, axes: torch.Tensor, colours: torch.Tensor, fit: BodyFit) -> GaussianCloud:
    """Camera-frame splats -> the world frame (see the module docstring), activated Gaussians."""
    linear, translation = fit.camera_to_body[:3, :3], fit.camera_to_body[:3, 3]
    means = means @ linear.T + translation
    axes = linear @ axes
    lo, hi = means.amin(0), means.amax(0)
    means = means - torch.tensor([(lo[0] + hi[0]) / 2, 0.0, (lo[2] + hi[2]) / 2])
    # Covariance A A^T = U S^2 U^T: U is the rotation, S the standard deviations.
    u, s, _ = torch.linalg.svd(axes.double())
    u[torch.linalg.det(u) < 0, :, 2] *= -1  # a reflection's last axis flipped: same covariance, a rotation
    quats = roma.quat_xyzw_to_wxyz(roma.rotmat_to_unitquat(u)).float()
    scales = s.float().clamp_min(1e-6)
    opacities = torch.full((len(means),), OPACITY)
    sh = rgb_to_sh0(colours.clamp(0, 1))[:, None, :]
    return GaussianCloud(means.float().contiguous(), quats.contiguous(), scales.contiguous(), opacities, sh.contiguous())
