"""Checks every asset reader applies, so the policies read the same for all formats."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from ..gaussians import AssetError, GaussianCloud

DEFAULT_MAX_GAUSSIANS = 5_000_000
"""Readers refuse files with more Gaussians than this, before reading the payload.

5M Gaussians at SH degree 3 are 1.2 GB of float32 raw values (plus the activated copy): more than
any single avatar needs, and a cheap guard against a hostile or corrupt header sizing an allocation.
Pass ``max_gaussians=None`` to a loader to lift the limit.
"""


def check_count(source: str | os.PathLike, count: int, max_gaussians: int | None) -> None:
    if max_gaussians is not None and count > max_gaussians:
        raise AssetError(
            f"{source}: {count:,} Gaussians is more than the limit of {max_gaussians:,} "
            "(raise it with max_gaussians=...)"
        )


def check_rotations(source: str | os.PathLike, quats: torch.Tensor) -> None:
    """A zero quaternion names no rotation; refuse the file rather than guess one."""
    zero = ~(quats != 0).any(dim=1)
    if bool(zero.any()):
        first = int(zero.nonzero()[0])
        raise AssetError(f"{source}: {int(zero.sum())} Gaussians have a zero-length rotation quaternion (first: #{first})")


def warn_dropped(source: str | os.PathLike, dropped: int, total: int) -> None:
    if dropped:
        warnings.warn(f"{source}: dropped {dropped} of {total} Gaussians with non-finite values (NaN or Inf)", stacklevel=3)


def check_finite(destination: str | os.PathLike, cloud: GaussianCloud) -> None:
    """Writers refuse non-finite Gaussians rather than store values no reader can use."""
    bad = len(cloud) - int(finite_rows(cloud.means, cloud.quats, cloud.scales, cloud.opacities, cloud.sh).sum())
    if bad:
        raise AssetError(
            f"{destination}: {bad} Gaussians have non-finite values; drop them first "
            "(cloud.subset(cloud.finite_mask()))"
        )


def finite_rows(*values: torch.Tensor) -> torch.Tensor:
    """True for rows (first axis) finite in every tensor; numpy's isfinite is several times torch's on CPU."""
    finite = np.ones(len(values[0]), dtype=bool)
    for value in values:
        value = value.detach().cpu().numpy()
        finite &= np.isfinite(value).all(axis=tuple(range(1, value.ndim)))
    return torch.from_numpy(finite)
