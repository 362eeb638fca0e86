"""The one entry point from a photo to an avatar: the learned pipeline when checkpoints are
given, the weight-free path otherwise. The CLI and the server's upload jobs both call it."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .gaussians import GaussianCloud
from .images import load_image
from .prior import BodyModel, fit_body
from .segmentation import segment_person
from .weightfree import DEFAULT_NUM_GAUSSIANS
from .weightfree import reconstruct as weight_free_reconstruct

if TYPE_CHECKING:
    from ..export import EngineConfig
    from .pipeline import ReconstructionPipeline

Photo = str | os.PathLike | bytes
StageReport = Callable[[str], None]


def reconstruction_device() -> str:
    """Where the learned pipeline runs: the CUDA GPU if there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def reconstruction_dtype(device: str) -> torch.dtype:
    """FP16 on the GPU; FP32 on the CPU, where half precision is slow and loses accuracy."""
    return torch.float16 if device == "cuda" else torch.float32


def engine_config(engine: EngineConfig | str | None = None) -> EngineConfig:
    """``engine`` as an ``EngineConfig``: a name (``eager``, ``torch``, ``tensorrt``) with default
    options, or the default engine (torch on a CUDA GPU, eager on the CPU). A bad name raises
    ``EngineError``."""
    from ..export import EngineConfig

    if isinstance(engine, EngineConfig):
        return engine
    return EngineConfig() if engine is None else EngineConfig(engine)


def reconstruct_photo(
    photo: Photo,
    checkpoints: str | os.PathLike | None = None,
    num_gaussians: int = DEFAULT_NUM_GAUSSIANS,
    body_model: BodyModel | None = None,
    progress: StageReport | None = None,
    seed: int = 0,
    engine: EngineConfig | str | None = None,
    engine_cache: str | os.PathLike | None = None,
) -> GaussianCloud:
    """An avatar from one photo (path or file bytes).

    ``checkpoints``: a folder of the learned pipeline's weights (see ``engine.checkpoints``);
    None runs the weight-free path, sized to ``num_gaussians``. The learned pipeline's networks
    run through ``engine`` (see ``engine_config``), loaded from ``engine_cache`` (default: the
    folder ``splatcast export`` fills, ``config.default_engine_cache``) or built into it on first
    use; the weight-free path has no networks and ignores both. ``progress`` hears each stage's
    name as it starts. Bad photos raise ``images.ImageError`` (a ``ValueError``); an engine that
    cannot run here raises ``export.EngineError`` before the weights are read.
    """
    report = progress or (lambda _stage: None)
    if checkpoints is not None:
        report("loading checkpoints")
        pipeline = load_learned_pipeline(checkpoints, engine, engine_cache, body_model)
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


def load_learned_pipeline(
    checkpoints: str | os.PathLike,
    engine: EngineConfig | str | None = None,
    engine_cache: str | os.PathLike | None = None,
    body_model: BodyModel | None = None,
) -> ReconstructionPipeline:
    """The learned pipeline of ``checkpoints`` with ``engine``'s networks (as ``reconstruct_photo``
    takes them), loaded on this process's first call and kept for the next (``learned_pipeline``)."""
    from ..config import default_engine_cache

    folder = Path(checkpoints).resolve()
    cache = Path(engine_cache or default_engine_cache()).resolve()
    return learned_pipeline(folder, _file_stamps(folder), engine_config(engine), cache, body_model)


@functools.lru_cache(maxsize=1)
def learned_pipeline(
    checkpoints: Path, stamps: tuple, engine: EngineConfig, engine_cache: Path, body_model: BodyModel | None = None
) -> ReconstructionPipeline:
    """The learned pipeline of ``checkpoints`` on this machine's device, its engines loaded, kept
    for the process's next photo: a server's reconstruction process serves many, and loading
    weights and engines takes longer than a photo (a 31 s cached engine start against 7.3 s a
    photo on the H200). ``stamps`` (``_file_stamps``) are in the key so that weights replaced
    on disk are loaded anew."""
    from .pipeline import ReconstructionPipeline

    device = reconstruction_device()
    return ReconstructionPipeline.from_checkpoints(
        checkpoints, device=device, dtype=reconstruction_dtype(device), body_model=body_model, engine=engine, engine_cache=engine_cache
    )


def _file_stamps(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, modification time) of each file in ``folder``; empty for a missing folder,
    which the pipeline's loading then names."""
    if not folder.is_dir():
        return ()
    stats = ((f.name, f.stat()) for f in folder.iterdir() if f.is_file())
    return tuple(sorted((name, stat.st_size, stat.st_mtime_ns) for name, stat in stats))
