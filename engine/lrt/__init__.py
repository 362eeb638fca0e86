"""The latent reconstruction transformer: view latents and a body prior to 3D Gaussians."""

from .model import LatentReconstructionTransformer, LRTConfig, to_cloud
from .rays import plucker_rays

__all__ = ["LRTConfig", "LatentReconstructionTransformer", "plucker_rays", "to_cloud"]
