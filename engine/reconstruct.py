"""The one entry point from a photo to an avatar: the learned pipeline when checkpoints are
given, the weight-free path otherwise. The CLI and the server's upload jobs both call it."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .gaussians import GaussianCloud
from .images import load_image
from .prior import BodyModel, fit_body
from .segmentation import segment_person
from .weightfree import DEFAULT_NUM_GAUSSIANS
from .weightfree import reconstruct as weight_free_reconstruct

Photo = str | os.PathLike | bytes
StageReport = Callable[[str], None]


def reconstruct_photo(
    photo: Photo,
    checkpoints: str | os.PathLike | None = None,
    num_gaussians: int = DEFAULT_NUM_GAUSSIANS,
    body_model: BodyModel | None = None,
    progress: StageReport | None = None,
    seed: int = 0,
) -> GaussianCloud:
    """An avatar from one photo (path or file bytes).

    ``checkpoints``: a folder of the learned pipeline's weights (see ``engine.checkpoints``);
    None runs the weight-free path, sized to ``num_gaussians``. ``progress`` hears each stage's
    name as it starts. Bad photos raise ``images.ImageError`` (a ``ValueError``).
    """
    report = progress or (lambda _stage: None)
    if checkpoints is not None:
        from .pipeline import ReconstructionPipeline

        report("loading checkpoints")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        pipeline = ReconstructionPipeline.from_checkpoints(checkpoints, device=device, dtype=dtype, body_model=body_model)
        report("learned reconstruction")
        return pipeline(photo, seed=seed, progress=False)[0]
    report("loading photo")
    image = load_image(photo)
    report("segmentation")
    segmentation = segment_person(image)
    report("body prior")
    fit = fit_body(segmentation, body_model)
    report("Gaussians")
    return weight_free_reconstruct(image, segmentation, fit, num_gaussians=num_gaussians, seed=seed)
