"""The learned reconstruction, HumanSplat's way: photo -> segmentation -> body prior -> SV3D_p
novel views (latents) -> latent reconstruction transformer -> 3D Gaussians.

Each stage is timed (``ReconstructionPipeline.timings``, seconds, GPU work synchronised; loading
the photo counts to "segmentation") and shown with a progress bar. Results depend only on the photos, the weights and ``seed``; a batch of
photos shares the synthesis and reconstruction passes, and each photo's avatar is the one it
gets alone (to floating-point rounding).

The output is in splatcast's world frame: metres as the fitted body measures them, y up,
facing +z, the fitted body's soles on y = 0, the bounding box centred on x = z = 0 (as the
weight-free path places its avatars).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .checkpoints import CheckpointError, load_lrt, load_synthesizer
from .framing import Framing, frame_person
from .gaussians import GaussianCloud
from .images import load_image
from .lrt import LatentReconstructionTransformer, LRTConfig, plucker_rays, to_cloud
from .prior import BodyFit, BodyModel, fit_body
from .segmentation import segment_person
from .synth import SV3DSynthesizer, SynthConfig

if TYPE_CHECKING:
    from ..export import EngineConfig

PhotoSource = str | os.PathLike | bytes | np.ndarray

ARCHITECTURE_FILE = "architecture.json"
"""Optional in a checkpoint folder whose networks are not the released sizes (a distilled model,
the tests' tiny ones). A JSON object, every key optional: "synthesizer" (``{"unet": ..., "vae":
..., "image_encoder": ...}``, the constructor arguments ``SV3DSynthesizer.from_config`` takes),
"synth", "lrt" and "pipeline" (the fields of ``SynthConfig``, ``LRTConfig``, ``PipelineConfig``)."""


@dataclass(frozen=True)
class PipelineConfig:
    """``view_azimuths_deg``: the generated views the transformer reads besides the photo's (the
    orbit frames nearest these azimuths; degrees from the photo's view). ``max_prior_tokens``:
    body vertices kept for the prior (evenly strided over the model's vertex order). ``fit_steps``:
    optimiser steps of the body fit (``prior.fit_body``)."""

    view_azimuths_deg: tuple[float, ...] = (90.0, 180.0, 270.0)
    max_prior_tokens: int = 2048
    fit_steps: int = 100


class ReconstructionPipeline:
    def __init__(
        self,
        synthesizer: SV3DSynthesizer,
        lrt: LatentReconstructionTransformer,
        config: PipelineConfig | None = None,
        body_model: BodyModel | None = None,
    ):
        self.synthesizer = synthesizer
        self.lrt = lrt.eval()
        self.config = config or PipelineConfig()
        self.body_model = body_model
        self.reconstructor: Callable[..., torch.Tensor] | None = None
        """Runs the transformer's calls when set (an engine, see ``use_engines``); None calls ``lrt``."""
        self.timings: dict[str, float] = {}
        views = 1 + len(self.config.view_azimuths_deg)
        if views != lrt.config.num_views:
            raise ValueError(f"the transformer reads {lrt.config.num_views} views, the pipeline would give it {views}")
        if synthesizer.config.resolution // synthesizer.vae_scale != lrt.config.latent_size:
            raise ValueError(
                f"the synthesizer's {synthesizer.config.resolution} px views give "
                f"{synthesizer.config.resolution // synthesizer.vae_scale} px latents, the transformer reads {lrt.config.latent_size}"
            )

    @classmethod
    def from_checkpoints(
        cls,
        folder: str | os.PathLike,
        device: torch.device | str = "cuda",
        dtype: torch.dtype = torch.float16,
        synth_config: SynthConfig | None = None,
        config: PipelineConfig | None = None,
        body_model: BodyModel | None = None,
        engine: EngineConfig | None = None,
        engine_cache: str | os.PathLike | None = None,
    ) -> ReconstructionPipeline:
        """The released architectures (or those of the folder's ``ARCHITECTURE_FILE``) with weights
        from ``folder`` (see ``checkpoints``). With ``engine``, the networks run through it
        (``use_engines``); an engine that cannot run here is refused before any weight is read."""
        if engine is not None:
            from ..export.build import check_engine

            check_engine(engine, device)
        sizes = _architecture(folder)
        synthesizer = load_synthesizer(folder, synth_config or sizes.get("synth"), device, dtype, sizes.get("synthesizer"))
        lrt = load_lrt(folder, sizes.get("lrt"), device=device, dtype=dtype)
        pipeline = cls(synthesizer, lrt, config or sizes.get("pipeline"), body_model)
        if engine is not None:
            pipeline.use_engines(engine, engine_cache)
        return pipeline

    def use_engines(self, config: EngineConfig, cache_dir: str | os.PathLike | None = None) -> None:
        """Run the synthesizer's denoising steps and the transformer through ``config``'s engines
        (``export``), loaded from ``cache_dir`` or built into it on first use, one per input
        shapes (``export.EnginePerShape`` says why). The ``eager`` engine runs the networks as
        they are: the same results as without engines. Raises ``EngineError`` at once when the
        engine cannot run on the pipeline's device (a missing package, no GPU)."""
        from ..export.build import EnginePerShape, check_engine, pipeline_lrt_graph, pipeline_step_graph

        check_engine(config, self.synthesizer.device)
        self.synthesizer.denoiser = EnginePerShape(lambda sample, *_: pipeline_step_graph(self, len(sample) // 2), config, cache_dir)
        self.reconstructor = EnginePerShape(lambda latents, _rays, xyz, _uv: pipeline_lrt_graph(self, len(latents), xyz.shape[1]), config, cache_dir)

    def __call__(self, photos: PhotoSource | Sequence[PhotoSource], seed: int = 0, progress: bool = True) -> list[GaussianCloud]:
        """One Gaussian avatar per photo (a path, file bytes or an image array, as ``load_image``)."""
        if isinstance(photos, (str, os.PathLike, bytes, np.ndarray)):
            photos = [photos]
        synth_cfg = self.synthesizer.config
        self.timings = {}
        with _progress(progress) as bars:
            per_photo = bars.add_task("segment + fit body", total=len(photos))
            framings, fits = [], []
            for photo in photos:
                with self._timed("segmentation"):
                    image = load_image(photo)
                    segmentation = segment_person(image)
                with self._timed("body prior"):
                    fit = fit_body(segmentation, self.body_model, steps=self.config.fit_steps, device=self.synthesizer.device)
                framings.append(frame_person(image, segmentation.mask, fit, synth_cfg.resolution))
                fits.append(fit)
                bars.advance(per_photo)

            steps = bars.add_task("novel views (SV3D_p)", total=synth_cfg.steps)
            with self._timed("synthesis"):
                images = torch.stack([f.image for f in framings])
                elevations = torch.tensor([f.elevation_deg for f in framings])
                # One generator per photo: a photo's avatar does not depend on the rest of the batch.
                generator = [torch.Generator().manual_seed(seed) for _ in photos]
                views = self.synthesizer(images, elevations, generator, on_step=lambda done, _: bars.update(steps, completed=done))

            recon = bars.add_task("Gaussians (LRT)", total=1)
            with self._timed("reconstruction"):
                clouds = self._reconstruct(views.latents, views.input_latents, views.azimuths, framings, fits)
            bars.advance(recon)
        return clouds

    @torch.no_grad()
    def _reconstruct(
        self, latents: torch.Tensor, input_latents: torch.Tensor, azimuths: torch.Tensor, framings: list[Framing], fits: list[BodyFit]
    ) -> list[GaussianCloud]:
        frames = [_nearest_frame(azimuths, a) for a in self.config.view_azimuths_deg]
        device, dtype = input_latents.device, input_latents.dtype
        view_latents = torch.cat([input_latents[:, None], latents[:, frames]], dim=1)
        size = self.lrt.config.latent_size
        rays = torch.stack([plucker_rays(f.object_views(azimuths[frames], size)) for f in framings])
        prior = [self._prior(f, fit) for f, fit in zip(framings, fits)]
        xyz = torch.stack([p[0] for p in prior]).to(device, dtype)
        uv = torch.stack([p[1] for p in prior]).to(device, dtype)
        params = (self.reconstructor or self.lrt)(view_latents.to(dtype), rays.to(device, dtype), xyz, uv).to(dtype)
        return [_to_world(to_cloud(p.cpu()), f) for p, f in zip(params, framings)]

    def _prior(self, framing: Framing, fit: BodyFit) -> tuple[torch.Tensor, torch.Tensor]:
        """Body vertices for the prior: object-frame xyz (P, 3) and their place in the crop as
        ``grid_sample`` coordinates (P, 2)."""
        count = min(self.config.max_prior_tokens, len(fit.vertices))
        vertices = fit.vertices[torch.linspace(0, len(fit.vertices) - 1, count).round().long()].float()
        to_body = fit.camera_to_body.float()
        xyz = framing.to_object(vertices @ to_body[:3, :3].T + to_body[:3, 3])
        k = framing.intrinsics
        pixels = vertices[:, :2] / vertices[:, 2:].clamp_min(1e-3) * k.diagonal()[:2] + k[:2, 2]
        return xyz, pixels / framing.resolution * 2 - 1

    @contextmanager
    def _timed(self, stage: str):
        start = time.perf_counter()
        yield
        if self.synthesizer.device.type == "cuda":
            torch.cuda.synchronize(self.synthesizer.device)
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


def _architecture(folder: str | os.PathLike) -> dict:
    """The configs in ``folder``'s ``ARCHITECTURE_FILE`` (keys as there), {} without one."""
    path = Path(folder) / ARCHITECTURE_FILE
    if not path.is_file():
        return {}
    configs = {"synth": SynthConfig, "lrt": LRTConfig, "pipeline": PipelineConfig}
    try:
        sizes = json.loads(path.read_text(), object_pairs_hook=lambda pairs: {k: _tuples(v) for k, v in pairs})
        unknown = set(sizes) - {"synthesizer", *configs}
        if unknown:
            raise ValueError(f"unknown keys {', '.join(sorted(unknown))}")
        return {key: configs[key](**value) if key in configs else value for key, value in sizes.items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path} does not describe the networks ({error}); see ARCHITECTURE_FILE in engine/pipeline.py") from None


def _tuples(value):
    """JSON arrays as tuples, as the configs' sizes are written."""
    return tuple(value) if isinstance(value, list) else value


def _nearest_frame(azimuths: torch.Tensor, degrees: float) -> int:
    """The orbit frame whose azimuth is nearest ``degrees`` (around the circle)."""
    difference = torch.remainder(azimuths - torch.deg2rad(torch.tensor(degrees)) + torch.pi, 2 * torch.pi) - torch.pi
    return int(difference.abs().argmin())


def _to_world(cloud: GaussianCloud, framing: Framing) -> GaussianCloud:
    """Object frame -> world (axes shared, so rotations stay), bounding box centred on x = z = 0."""
    means = framing.centre + framing.extent * cloud.means
    lo, hi = means.amin(0), means.amax(0)
    means = means - torch.tensor([(lo[0] + hi[0]) / 2, 0.0, (lo[2] + hi[2]) / 2])
    return GaussianCloud(means, cloud.quats, cloud.scales * framing.extent, cloud.opacities, cloud.sh)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), disable=not enabled
    )
