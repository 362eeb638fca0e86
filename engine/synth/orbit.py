"""SV3D_p's orbit and its per-frame classifier-free guidance, as its reference sampler sets them.

Angles are radians. The orbit circles the object at one elevation: frame i (0-based) of T sits
at azimuth 2 pi (i + 1) / T, so the last frame (azimuth 0) is the input view itself and the
first is one step past it; polar = pi / 2 - elevation (generative-models,
``scripts/sampling/simple_video_sample.py``, version ``sv3d_p``).
"""

from __future__ import annotations

import math

import torch


def orbit_azimuths(num_views: int) -> torch.Tensor:
    """(T,) azimuths in [0, 2 pi): 2 pi (i + 1) / T, the last one 0 (the input view)."""
    return (torch.arange(1, num_views + 1, dtype=torch.float64) * (2 * math.pi / num_views)).remainder(2 * math.pi).float()


def orbit_polars(elevation_deg: torch.Tensor, num_views: int) -> torch.Tensor:
    """(B, T) polar angles for one elevation (degrees, positive above the object) per batch item."""
    elevation = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
    return (math.pi / 2 - torch.deg2rad(elevation))[:, None].expand(-1, num_views)


def triangle_guidance(num_views: int, min_scale: float = 1.0, max_scale: float = 2.5) -> torch.Tensor:
    """(T,) guidance scales rising linearly from ``min_scale`` at the first and last frames (next to
    the input view) to ``max_scale`` half way round (sgm's ``TrianglePredictionGuider``, period 1)."""
    values = torch.linspace(0, 1, num_views)
    wave = 2 * (values - torch.floor(values + 0.5)).abs()
    return min_scale + (max_scale - min_scale) * wave
