"""Tiny random-initialised configs of the learned reconstruction's real architectures (CPU tests)."""

import cv2
import numpy as np
import torch
from skimage.data import astronaut
from splatcast.engine.lrt import LatentReconstructionTransformer, LRTConfig
from splatcast.engine.pipeline import PipelineConfig, ReconstructionPipeline
from splatcast.engine.synth import SV3DSynthesizer, SynthConfig

TINY_SYNTH = {
    "unet": {
        "block_out_channels": (32, 32, 32, 32),
        "num_attention_heads": (2, 2, 2, 2),
        "cross_attention_dim": 16,
        "layers_per_block": 1,
        "added_time_dims": (8, 16, 16),
    },
    "vae": {
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (32, 32, 32, 32),
        "layers_per_block": 1,
        "latent_channels": 4,
    },
    "image_encoder": {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 8, "image_size": 32, "projection_dim": 16
    },
}
"""64x64 views, 8x8 latents (the VAE downsamples 8x, as the released one); 4 orbit views, at
90, 180, 270 and 0 degrees, so the pipeline finds its three generated views exactly."""
TINY_SYNTH_CONFIG = SynthConfig(num_views=4, resolution=64, steps=2)
TINY_LRT = LRTConfig(latent_size=8, dims=(32, 64), depths=(1, 1), head_dim=16, prior_width=32, gaussian_size=16)


def tiny_synthesizer(config: SynthConfig = TINY_SYNTH_CONFIG) -> SV3DSynthesizer:
    return SV3DSynthesizer.from_config(config, **TINY_SYNTH).to("cpu")


def tiny_pipeline() -> ReconstructionPipeline:
    """The whole learned pipeline at tiny sizes, with a short body fit and few prior tokens."""
    torch.manual_seed(0)
    return ReconstructionPipeline(tiny_synthesizer(), LatentReconstructionTransformer(TINY_LRT), PipelineConfig(fit_steps=10, max_prior_tokens=256))


def tiny_photo() -> np.ndarray:
    """The astronaut portrait at 128 px, enough for the tiny pipeline."""
    return cv2.resize(astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
