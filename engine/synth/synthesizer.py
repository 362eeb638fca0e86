"""The SV3D_p novel-view synthesizer wired from diffusers and transformers building blocks.

One photo of a person (cut out, on white, square) in; the latents of ``num_views`` views on an
orbit around them out (the reconstruction transformer works on latents, so nothing is decoded).
Sampling is SV3D's: EDM's Euler sampler over Karras sigmas in [0.002, 700] with SVD's
v-prediction scalings (diffusers' ``EulerDiscreteScheduler`` in its SVD configuration does exactly
this), classifier-free guidance per frame from ``orbit.triangle_guidance``. The unconditional
branch zeroes both the CLIP embedding and the input-view latent, as SV3D's sampler does.

Latent conventions: the conditioning latent is the VAE's mode of the (slightly noised) input
view, unscaled, as SVD and SV3D feed it; sampled latents and ``input_latents`` are in the
diffusion space, scaled by the VAE's ``scaling_factor``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .orbit import orbit_azimuths, orbit_polars, triangle_guidance
from .unet import SV3DUNet

SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "prediction_type": "v_prediction",
    "interpolation_type": "linear",
    "use_karras_sigmas": True,
    "sigma_min": 0.002,
    "sigma_max": 700.0,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "steps_offset": 1,
}
"""EDM discretisation (rho 7) over SV3D's sigma range, c_noise = log(sigma) / 4, v-prediction."""

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "scaling_factor": 0.18215,
}
"""SV3D's first stage: the Stable Diffusion 2.1 image autoencoder (8x down, 4 channels)."""

Generators = torch.Generator | list[torch.Generator] | None

CLIP_VIT_H_14 = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
}
"""OpenCLIP ViT-H/14's image tower, whose 1024-d embedding is the UNet's cross-attention context."""


def edm_euler_scheduler() -> EulerDiscreteScheduler:
    """The sampler's scheduler. Its tables stay on the CPU (it converts them through numpy), also
    when the networks are built under a ``torch.device`` context."""
    with torch.device("cpu"):
        return EulerDiscreteScheduler(**SCHEDULER_CONFIG)


@dataclass(frozen=True)
class SynthConfig:
    """Sampling settings. ``resolution`` is the square view size in pixels (a multiple of 64 for
    the UNet's three downsamplings of the 8x latent); ``steps`` Euler steps (HumanSplat: 25,
    SV3D's script: 50); guidance rises from ``min_guidance`` to ``max_guidance`` round the orbit;
    ``cond_aug`` is the noise level added to the input view before encoding."""

    num_views: int = 21
    resolution: int = 576
    steps: int = 25
    min_guidance: float = 1.0
    max_guidance: float = 2.5
    cond_aug: float = 1e-5

    def __post_init__(self) -> None:
        if self.num_views < 2 or self.steps < 1:
            raise ValueError(f"need at least 2 views and 1 step, got {self.num_views} views, {self.steps} steps")
        if self.resolution <= 0 or self.resolution % 64:
            raise ValueError(f"resolution must be a positive multiple of 64, got {self.resolution}")


@dataclass(frozen=True)
class Conditioning:
    """Everything the UNet sees besides the noisy latents, for the unconditional and conditional
    branches stacked on the batch axis (2B). guidance (B, T) scales per frame."""

    context: torch.Tensor
    image_latents: torch.Tensor
    added_time_ids: torch.Tensor
    guidance: torch.Tensor


@dataclass(frozen=True)
class SynthResult:
    """latents (B, T, 4, r/8, r/8) of the orbit views in diffusion space; input_latents (B, 4, r/8, r/8)
    the input view's; azimuths (T,) and polars (B, T) in radians (see ``orbit``)."""

    latents: torch.Tensor
    input_latents: torch.Tensor
    azimuths: torch.Tensor
    polars: torch.Tensor


Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""One UNet call ``(sample, timestep, encoder_hidden_states, added_time_ids) -> output``."""


@dataclass
class SV3DSynthesizer:
    """SV3D_p: ``SV3DUNet`` + SD's ``AutoencoderKL`` + CLIP ViT-H/14 + Euler EDM sampling.

    ``denoiser`` runs the UNet's calls when set (an optimized engine of the step graph, see
    ``ReconstructionPipeline.use_engines``); None calls ``unet`` itself."""

    unet: SV3DUNet
    vae: AutoencoderKL
    image_encoder: CLIPVisionModelWithProjection
    config: SynthConfig = field(default_factory=SynthConfig)
    scheduler: EulerDiscreteScheduler = field(default_factory=lambda: edm_euler_scheduler())
    denoiser: Denoiser | None = None

    @classmethod
    def from_config(
        cls,
        config: SynthConfig | None = None,
        unet: dict | None = None,
        vae: dict | None = None,
        image_encoder: dict | None = None,
    ) -> SV3DSynthesizer:
        """Randomly initialised modules: the released sizes, or the given constructor arguments
        (tests use tiny ones). Load weights with ``checkpoints.load_synthesizer``. Built under a
        ``torch.device`` context, call ``to(device)`` after: a few diffusers parameters are made
        with ``torch.Tensor(...)``, which ignores the context."""
        return cls(
            SV3DUNet(**(unet or {})),
            AutoencoderKL(**(vae or VAE_CONFIG)),
            CLIPVisionModelWithProjection(CLIPVisionConfig(**(image_encoder or CLIP_VIT_H_14))),
            config or SynthConfig(),
        )

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "image_encoder": self.image_encoder}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SV3DSynthesizer:
        # Only what is given: diffusers warns about any dtype passed to ``ModelMixin.to``.
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in self.modules().values():
            module.to(**kwargs).eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @torch.no_grad()
    def condition(self, images: torch.Tensor, elevation_deg: torch.Tensor | float, generator: Generators = None) -> Conditioning:
        """The UNet's conditioning for ``images`` (B, 3, r, r) in [0, 1] (the person on white) seen
        from ``elevation_deg`` (a number or (B,), degrees above the horizon)."""
        cfg = self.config
        batch = images.shape[0]
        images = self._check_images(images)
        pixels = images * 2 - 1
        context = self.image_encoder(pixel_values=self._clip_pixels(images)).image_embeds[:, None]
        noisy = pixels + cfg.cond_aug * randn_tensor(pixels.shape, generator=generator, device=self.device, dtype=pixels.dtype)
        image_latents = self.vae.encode(noisy).latent_dist.mode()[:, None].expand(-1, cfg.num_views, -1, -1, -1)
        polars = orbit_polars(elevation_deg, cfg.num_views).expand(batch, -1)
        ids = torch.stack(
            [torch.full_like(polars, cfg.cond_aug), polars, orbit_azimuths(cfg.num_views).expand(batch, -1)], dim=-1
        ).to(self.device)
        guidance = triangle_guidance(cfg.num_views, cfg.min_guidance, cfg.max_guidance).expand(batch, -1).to(self.device)
        return Conditioning(
            context=torch.cat([torch.zeros_like(context), context]),
            image_latents=torch.cat([torch.zeros_like(image_latents), image_latents]),
            added_time_ids=torch.cat([ids, ids]),
            guidance=guidance,
        )

    @torch.no_grad()
    def guided_prediction(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One guided UNet evaluation (both branches in one batch of 2B): the v-prediction for the
        scaled noisy ``latents`` (B, T, 4, h, w) at ``timestep`` (c_noise)."""
        sample = torch.cat([torch.cat([latents, latents]), cond.image_latents.to(latents.dtype)], dim=2)
        denoise = self.denoiser or self.unet
        out = denoise(sample, timestep, cond.context, cond.added_time_ids.to(latents.dtype)).to(latents.dtype)
        uncond, conditional = out.chunk(2)
        scale = cond.guidance[:, :, None, None, None].to(out.dtype)
        return uncond + scale * (conditional - uncond)

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        elevation_deg: torch.Tensor | float = 0.0,
        generator: Generators = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> SynthResult:
        """Sample the orbit views of ``images`` (B, 3, r, r) in [0, 1]; deterministic given
        ``generator``. ``on_step(done, total)`` is called after every Euler step."""
        cfg = self.config
        cond = self.condition(images, elevation_deg, generator)
        batch = images.shape[0]
        side = cfg.resolution // self.vae_scale
        shape = (batch, cfg.num_views, self.unet.config.out_channels, side, side)
        self.scheduler.set_timesteps(cfg.steps, device=self.device)
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype) * self.scheduler.init_noise_sigma
        for i, t in enumerate(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(latents, t)
            prediction = self.guided_prediction(model_input, t, cond)
            latents = self.scheduler.step(prediction, t, latents).prev_sample.to(self.dtype)
            if on_step is not None:
                on_step(i + 1, cfg.steps)
        return SynthResult(
            latents=latents,
            input_latents=self.encode(images),
            azimuths=orbit_azimuths(cfg.num_views),
            polars=orbit_polars(elevation_deg, cfg.num_views).expand(batch, -1),
        )

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latents (B, 4, r/8, r/8) of ``images`` (B, 3, r, r) in [0, 1]."""
        latents = self.vae.encode(self._check_images(images) * 2 - 1).latent_dist.mode()
        return latents * self.vae.config.scaling_factor

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"images must be (B, 3, {r}, {r}) in [0, 1], got {tuple(images.shape)}")
        return images.to(self.device, self.dtype)

    def _clip_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's input: resized with antialiasing to its square size, normalised by its mean and std."""
        size = self.image_encoder.config.image_size
        pixels = F.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        mean = torch.tensor(OPENAI_CLIP_MEAN, device=images.device)[:, None, None]
        std = torch.tensor(OPENAI_CLIP_STD, device=images.device)[:, None, None]
        return ((pixels.clamp(0, 1) - mean) / std).to(self.dtype)
