"""Reconstruction: photo -> Gaussian avatar, and the Gaussian asset type with its file formats."""

from .gaussians import AssetError, GaussianCloud

__all__ = ["AssetError", "GaussianCloud"]
