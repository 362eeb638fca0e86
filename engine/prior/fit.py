"""Fitting a body model to one photo's person mask (and face, when one was found).

The photo's camera is a pinhole with unknown focal length; ``default_intrinsics`` assumes a
portrait lens (``DEFAULT_FOV_DEG`` across the longer side). The fit places the body in that
camera, with a small global rotation, an overall scale near 1 and the two arm angles free, by
minimising with Adam:

- inside: projected vertices that land in the frame but off the mask (distance to the mask,
  pixels). Past the frame edge the mask is taken to continue as it meets the edge, so a bust
  cut off by the frame fits with the rest of the body running out of the picture;
- cover: mask contour points far from every projected vertex (truncated: hair and loose clothes
  stand off the body);
- face: the head's projected centre and width against the detected face box, the one 2D
  landmark to be had without downloaded weights (scikit-image ships an LBP face cascade).
  No body-keypoint detector qualifies: MediaPipe's current wheel carries no model files and
  fetches them at run time, its older wheels that bundled a pose model need numpy < 2, and
  rtmlib downloads its ONNX models on first use;
- priors on rotation, scale and arm angles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import roma
import torch

from ..segmentation import Segmentation
from .body_model import BodyModel

DEFAULT_FOV_DEG = 40.0
"""Assumed field of view across the photo's longer side (a portrait lens, ~50 mm full-frame)."""
FIT_SIDE = 256
"""The mask is fitted at this size on its longer side (pixels)."""
HEAD_WIDTH_PER_FACE = 1.05
"""Projected head width (ear to ear) over the LBP face box width; set by eye on the astronaut photo."""

LEAN_PRIOR = torch.tensor([10.0, 1.0, 10.0])
"""Prior weights on the body's rotation vector (x: lean forward, y: turn, z: lean sideways)."""
COVER_STRIDE = 4
"""Every this many vertices stand in for the mesh in the contour-cover term (its cost is contour x vertices)."""

# Camera axes from body axes for a body facing the camera: OpenCV y down, z away from the camera.
_FACING_CAMERA = torch.diag(torch.tensor([1.0, -1.0, -1.0]))


@dataclass(frozen=True)
class BodyFit:
    """A body model posed in the photo's camera.

    vertices (V, 3) metres in the photo's OpenCV camera frame; faces (F, 3); intrinsics (3, 3)
    for the photo at ``width`` x ``height`` pixels; camera_to_body (4, 4) similarity transform
    from that camera frame to the body frame (metres, y up along the camera's vertical, facing
    +z, the fitted body's soles near y = 0 and pelvis near the y axis: exactly so when the fitted
    lean is zero); visible (V,) True for vertices that project inside the photo.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    intrinsics: torch.Tensor
    width: int
    height: int
    camera_to_body: torch.Tensor
    visible: torch.Tensor
    model: str

    def project(self, points: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel coordinates (N, 2) of camera-frame points (default: the vertices)."""
        return _project(self.vertices if points is None else points, self.intrinsics)


def default_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> torch.Tensor:
    """Square pixels, principal point at the centre, ``fov_deg`` across the longer side."""
    focal = max(width, height) / (2 * math.tan(math.radians(fov_deg) / 2))
    return torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float32)


def fit_body(
    segmentation: Segmentation,
    body_model: BodyModel | None = None,
    intrinsics: torch.Tensor | None = None,
    steps: int = 100,
    device: torch.device | str = "cpu",
) -> BodyFit:
    """Fit ``body_model`` (default: Anny) to a segmented photo; see the module docstring. The
    optimisation runs on ``device`` (a GPU takes its steps' hundreds of small operations faster
    than one CPU core); the fit returned is on the CPU either way."""
    if body_model is None:
        from .anny_body import AnnyBody

        body_model = AnnyBody()
    with _single_threaded():
        return _fit(segmentation, body_model, intrinsics, steps, torch.device(device))


@contextmanager
def _single_threaded():
    """Run torch on one thread: the fit's tensors are a few thousand points, too small to gain
    from intra-op threads, and on a busy machine their spin-waits cost ten times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(segmentation: Segmentation, body_model: BodyModel, intrinsics: torch.Tensor | None, steps: int, device: torch.device) -> BodyFit:
    height, width = segmentation.mask.shape
    intrinsics = default_intrinsics(width, height) if intrinsics is None else intrinsics.float()
    scale = min(1.0, FIT_SIDE / max(height, width))
    fit_k = intrinsics.clone()
    fit_k[:2] *= scale
    mask = cv2.resize(segmentation.mask.astype(np.uint8), (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA) > 0
    face = None if segmentation.face_box is None else torch.tensor(segmentation.face_box, dtype=torch.float32) * scale
    targets = _Targets(mask, face)

    rest = body_model.vertices(torch.tensor(body_model.arms_down))
    translation = _initial_translation(rest, body_model, fit_k, targets).to(device).requires_grad_(True)
    rotvec = torch.zeros(3, device=device, requires_grad=True)
    log_scale = torch.zeros(1, device=device, requires_grad=True)
    arms_down = torch.tensor(body_model.arms_down, device=device)
    arms = arms_down.clone().requires_grad_(True)
    optimiser = torch.optim.Adam(
        [{"params": [translation], "lr": 0.01}, {"params": [rotvec, log_scale, arms], "lr": 0.02}]
    )
    loss_of = targets.on(device, body_model.head_vertices)
    fit_k_on, lean_prior, facing = fit_k.to(device), LEAN_PRIOR.to(device), _FACING_CAMERA.to(device)
    for _ in range(steps):
        optimiser.zero_grad()
        points = _place(body_model.vertices(arms), rotvec, log_scale, translation, facing)
        loss = loss_of(_project(points, fit_k_on))
        loss = loss + (rotvec.square() * lean_prior).sum() + 4.0 * log_scale.square().sum()
        loss = loss + 0.2 * (arms - arms_down).square().sum()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            translation[2].clamp_(min=0.2)

    with torch.no_grad():
        vertices = _place(body_model.vertices(arms), rotvec, log_scale, translation, facing).cpu()
        rotvec, log_scale, translation = rotvec.cpu(), log_scale.cpu(), translation.cpu()
        pixels = _project(vertices, intrinsics)
        visible = (vertices[:, 2] > 0) & (pixels >= 0).all(1) & (pixels[:, 0] < width) & (pixels[:, 1] < height)
        # body -> camera is x -> F R (s x) + t. Going back, only R's turn about the vertical is
        # undone: photos are taken level, and a lean read off one silhouette is less reliable.
        forward = roma.rotvec_to_rotmat(rotvec)[:, 2]
        yaw = torch.atan2(forward[0], forward[2])
        camera_to_body = torch.eye(4)
        linear = (_FACING_CAMERA @ roma.rotvec_to_rotmat(torch.stack([yaw.new_zeros(()), yaw, yaw.new_zeros(())]))).T / log_scale.exp()
        camera_to_body[:3, :3] = linear
        camera_to_body[:3, 3] = -linear @ translation
    return BodyFit(vertices, body_model.faces, intrinsics, width, height, camera_to_body, visible, body_model.name)


def _place(vertices: torch.Tensor, rotvec: torch.Tensor, log_scale: torch.Tensor, translation: torch.Tensor, facing: torch.Tensor) -> torch.Tensor:
    """Body frame -> camera frame: scale, rotate about the soles' origin, turn to face the camera
    (``facing``: ``_FACING_CAMERA`` on the tensors' device), move."""
    rotation = facing @ roma.rotvec_to_rotmat(rotvec)
    return (vertices * log_scale.exp()) @ rotation.T + translation


def _project(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    z = points[:, 2:].clamp_min(1e-3)
    return points[:, :2] / z * intrinsics.diagonal()[:2] + intrinsics[:2, 2]


def _initial_translation(rest: torch.Tensor, body: BodyModel, intrinsics: torch.Tensor, targets: _Targets) -> torch.Tensor:
    """Where to start: the head on the face box at the depth its size implies; without a face, the
    crown on the mask's top centre at whichever of a range of depths overlaps the mask most."""
    focal = float(intrinsics[0, 0])
    rest_camera = rest @ _FACING_CAMERA.T
    if targets.face is not None:
        x, y, w, h = targets.face.tolist()
        head = rest_camera[body.head_vertices]
        depth = focal * float(_spread(head[:, 0])) / (HEAD_WIDTH_PER_FACE * w)
        return _on_ray(torch.tensor([x + w / 2, y + h / 2]), depth, head.mean(0), intrinsics)
    ys, xs = np.nonzero(targets.mask)
    crown = rest_camera[rest_camera[:, 1].argmin()]
    best = (-1.0, None)
    for depth in np.geomspace(0.5, 20.0, 40):
        translation = _on_ray(torch.tensor([float(np.median(xs)), float(ys.min())]), float(depth), crown, intrinsics)
        overlap = targets.silhouette_iou(_project(rest_camera + translation, intrinsics))
        best = max(best, (overlap, translation), key=lambda b: b[0])
    return best[1]


def _on_ray(pixel: torch.Tensor, depth: float, anchor: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """The translation that puts the body point ``anchor`` (camera axes) on ``pixel``'s ray at ``depth``."""
    ray = (pixel - intrinsics[:2, 2]) / intrinsics.diagonal()[:2]
    return torch.cat([ray * depth, torch.tensor([depth])]) - anchor


def _spread(values: torch.Tensor) -> torch.Tensor:
    """Width of a set of coordinates, robustly: the extent of a uniform spread of that std."""
    return values.std() * math.sqrt(12)


class _Targets:
    """What the fit pulls towards, precomputed once from the mask and face box."""

    def __init__(self, mask: np.ndarray, face: torch.Tensor | None) -> None:
        self.mask = mask
        self.face = face
        height, width = mask.shape
        self.size = float(max(height, width))
        # Past the frame the mask continues as it meets the edge (BORDER_REPLICATE).
        self.pad = pad = max(height, width)
        padded = cv2.copyMakeBorder(mask.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        self.padded = padded.astype(bool)
        outside = cv2.distanceTransform((1 - padded).astype(np.uint8), cv2.DIST_L2, 5)
        self.outside = torch.from_numpy(outside)[None, None] / self.size
        contour = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        contour[[0, -1], :] = contour[:, [0, -1]] = False  # the frame edge is not the body's edge
        ys, xs = np.nonzero(contour)
        step = max(1, len(xs) // 600)
        self.contour = torch.from_numpy(np.stack([xs[::step], ys[::step]], 1).astype(np.float32) + 0.5)

    def silhouette_iou(self, pixels: torch.Tensor) -> float:
        """Intersection over union of the projected vertices (dilated to close the gaps between
        them) and the mask continued past the frame, as the inside term sees it."""
        uv = pixels.round().long() + self.pad
        size = self.padded.shape
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < size[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < size[0])
        drawn = np.zeros(size, np.uint8)
        drawn[uv[inside, 1].numpy(), uv[inside, 0].numpy()] = 1
        drawn = cv2.dilate(drawn, np.ones((3, 3), np.uint8)).astype(bool)
        return float((drawn & self.padded).sum() / max(1, (drawn | self.padded).sum()))

    def on(self, device: torch.device, head_vertices: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The fit's data term on ``device``: projected vertices (V, 2) -> loss; ``head_vertices``
        index the head's vertices, for the face term."""
        height, width = self.mask.shape
        padded_size = torch.tensor([width + 2 * self.pad, height + 2 * self.pad], dtype=torch.float32, device=device)
        outside, contour, head_vertices = self.outside.to(device), self.contour.to(device), head_vertices.to(device)
        face_centre = face_width = None
        if self.face is not None:
            x, y, face_width, face_height = self.face.tolist()
            face_centre = torch.tensor([x + face_width / 2, y + face_height / 2], device=device)

        def loss(pixels: torch.Tensor) -> torch.Tensor:
            grid = ((pixels + self.pad) / padded_size * 2 - 1)[None, None]
            off_mask = torch.nn.functional.grid_sample(outside, grid, align_corners=False, padding_mode="border")
            total = off_mask.square().mean() * 100.0
            if len(contour):
                nearest = torch.cdist(contour, pixels[::COVER_STRIDE]).min(1).values / self.size
                total = total + nearest.clamp(max=0.05).square().mean() * 30.0
            if face_centre is not None:
                head = pixels[head_vertices]
                total = total + ((head.mean(0) - face_centre) / face_width).square().sum() * 4.0
                total = total + (_spread(head[:, 0]) / (HEAD_WIDTH_PER_FACE * face_width)).log().square() * 4.0
            return total

        return loss
