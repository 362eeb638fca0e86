"""Person segmentation without downloaded weights.

Two sources, tried in order:
1. The photo's alpha channel, when it has a real one (a cut-out from any matting tool): taken
   as it is, opaque where alpha >= 0.5.
2. OpenCV's GrabCut (colour-model graph cut; no learned weights), seeded from a frontal face
   found by scikit-image's LBP cascade (the OpenCV cascade file that scikit-image ships). With a
   face, the seed is a head-and-torso box below and around it; without one, the frame less a
   border, so the person should fill most of the frame and stand out from the border.

No learned segmenter qualifies here: rembg and MediaPipe's current wheels fetch their models at
run time, and MediaPipe's older wheels that bundled a selfie segmenter need numpy < 2. GrabCut
separates foreground from background, not people from things: it can keep an object held in
front of the body. ``PersonNotFoundError`` is raised when no distinct foreground is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage

from .images import ImageError

WORK_SIDE = 512
"""Face detection and GrabCut's final cut run at most at this size (masks are upsampled after)."""
COARSE_SIDE = 256
"""GrabCut's colour-model rounds run at most at this size: a quarter of the pixels, and its
max-flow cost grows faster than the pixel count."""
MIN_AREA = 0.01
"""A foreground smaller than this fraction of the photo is not taken for a person."""
MAX_AREA = 0.97
SIDE_MARGIN = 0.04
"""Strips this wide (fraction of the width) along the photo's sides seed GrabCut as background:
portraits rarely reach the side edges, and background there anchors its colour model."""


class PersonNotFoundError(ImageError):
    """No person-like foreground could be separated from the background."""


@dataclass(frozen=True)
class Segmentation:
    """The person's mask in the photo's pixels and what produced it.

    mask (H, W) bool; face_box (x, y, width, height) in pixels when a frontal face was found;
    method is "alpha" or "grabcut".
    """

    mask: np.ndarray
    face_box: tuple[int, int, int, int] | None
    method: str


@lru_cache(maxsize=1)
def _face_cascade():
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade

    return Cascade(lbp_frontal_face_cascade_filename())


def detect_face(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest frontal face (x, y, width, height) in pixels, or None."""
    small, scale = _fit(rgb, WORK_SIDE)
    side = min(small.shape[:2])
    faces = _face_cascade().detect_multi_scale(
        img=np.ascontiguousarray(small, dtype=np.float64),
        scale_factor=1.2,
        step_ratio=1,
        min_size=(max(16, side // 20),) * 2,
        max_size=(side,) * 2,
    )
    if not faces:
        return None
    face = max(faces, key=lambda f: f["width"] * f["height"])
    return tuple(round(v / scale) for v in (face["c"], face["r"], face["width"], face["height"]))


def segment_person(image: np.ndarray, iterations: int = 5) -> Segmentation:
    """The person's mask in a photo from ``images.load_image`` (float RGB or RGBA in [0, 1])."""
    rgb = image[..., :3]
    face_box = detect_face(rgb)
    if image.shape[2] == 4 and (image[..., 3] < 0.5).any():
        mask = image[..., 3] >= 0.5
        method = "alpha"
    else:
        if float(rgb.std()) < 0.02:
            raise PersonNotFoundError("no person found: the photo is a single flat colour")
        mask = _clean(_grabcut(rgb, face_box, iterations), face_box)
        method = "grabcut"
    area = float(mask.mean())
    if not MIN_AREA <= area <= MAX_AREA:
        raise PersonNotFoundError(
            f"no person found: the foreground covers {100 * area:.1f}% of the photo "
            f"(expected {100 * MIN_AREA:g}%-{100 * MAX_AREA:g}%); a photo with an alpha cut-out works best"
        )
    return Segmentation(mask, face_box, method)


def _fit(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The image shrunk (area-averaged) to at most ``side`` pixels on its long side, and the scale."""
    height, width = image.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _grabcut(rgb: np.ndarray, face_box: tuple[int, int, int, int] | None, iterations: int) -> np.ndarray:
    """GrabCut coarse to fine: its rounds of colour-model fitting and graph cut run at
    ``COARSE_SIDE``, then one cut at ``WORK_SIDE`` with the fitted models draws the boundary at
    full detail (astronaut(): 0.7 s against 1.8 s for all rounds at ``WORK_SIDE``, 2 CPU cores).

    The models start from k-means over the ``WORK_SIDE`` pixels, as a single-scale run's do:
    k-means over the coarse pixels settles on other models, and a region whose colour both sides
    share then flips (the astronaut's black helmet before the black backdrop).
    """
    height, width = rgb.shape[:2]
    work, work_scale = _fit(cv2.cvtColor((rgb * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR), WORK_SIDE)
    coarse, coarse_scale = _fit(work, COARSE_SIDE)

    def seeds_for(image: np.ndarray, scale: float) -> np.ndarray:
        box = None if face_box is None else tuple(v * scale for v in face_box)
        return _grabcut_seeds(image.shape[0], image.shape[1], box)

    seeds, coarse_labels = seeds_for(work, work_scale), seeds_for(coarse, work_scale * coarse_scale)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models with k-means: same photo, same mask
    cv2.grabCut(work, seeds, None, background, foreground, 0, cv2.GC_INIT_WITH_MASK)  # k-means only
    cv2.grabCut(coarse, coarse_labels, None, background, foreground, iterations, cv2.GC_EVAL)
    # The cut reads only the seeds' sure labels; every other pixel is weighed by the models alone.
    cv2.grabCut(work, seeds, None, background, foreground, 1, cv2.GC_EVAL_FREEZE_MODEL)
    mask = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.uint8)
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR) > 0


def _grabcut_seeds(height: int, width: int, face_box: tuple[float, float, float, float] | None) -> np.ndarray:
    """GrabCut's initial labels: sure background outside a person box, probable foreground inside.

    With a face (x, y, w, h) the box spans about 4.4 face widths (shoulders, arms) and reaches
    from above the hair to the bottom of the frame, less the two top corners beside the head
    (above the chin, past the hair) and thin strips along the side edges (``SIDE_MARGIN``); the
    face centre and a neck-to-chest column below it are sure foreground. Without a face the box
    is the frame less a border, with nothing sure: the middle of a photo is as often background
    between the arms and legs as it is the person.
    """
    seeds = np.full((height, width), cv2.GC_BGD, np.uint8)
    if face_box is None:
        mx, my = round(0.06 * width), round(0.04 * height)
        seeds[my:, mx : width - mx] = cv2.GC_PR_FGD
        return seeds
    x, y, w, h = face_box
    cx = x + w / 2

    def clip_x(v: float) -> int:
        return int(np.clip(round(v), 0, width))

    def clip_y(v: float) -> int:
        return int(np.clip(round(v), 0, height))

    seeds[clip_y(y - 0.8 * h) :, clip_x(cx - 2.2 * w) : clip_x(cx + 2.2 * w)] = cv2.GC_PR_FGD
    beside_head = slice(0, clip_y(y + h))
    seeds[beside_head, : clip_x(cx - 1.2 * w)] = cv2.GC_BGD
    seeds[beside_head, clip_x(cx + 1.2 * w) :] = cv2.GC_BGD
    edge = max(1, round(SIDE_MARGIN * width))
    seeds[:, :edge] = seeds[:, width - edge :] = cv2.GC_BGD
    seeds[clip_y(y + 0.25 * h) : clip_y(y + 0.8 * h), clip_x(cx - 0.25 * w) : clip_x(cx + 0.25 * w)] = cv2.GC_FGD
    seeds[clip_y(y + 1.6 * h) : clip_y(y + 2.6 * h), clip_x(cx - 0.4 * w) : clip_x(cx + 0.4 * w)] = cv2.GC_FGD
    if not (seeds == cv2.GC_BGD).any():
        seeds[:, :1] = seeds[:, -1:] = cv2.GC_BGD
    return seeds


def _clean(mask: np.ndarray, face_box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The connected region holding the person (the face's, else the largest), holes filled,
    specks and one-pixel bridges opened away."""
    radius = max(1, round(min(mask.shape) / 200))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    if face_box is not None:
        x, y, w, h = face_box
        face_label = labels[min(y + h // 2, mask.shape[0] - 1), min(x + w // 2, mask.shape[1] - 1)]
        if face_label:
            return ndimage.binary_fill_holes(labels == face_label)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
