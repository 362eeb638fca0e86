"""Rasterization: Gaussians + views -> pixels, and the colour conversions the encoder needs."""
