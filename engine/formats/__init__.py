"""Gaussian asset files: the INRIA 3DGS ``.ply`` and the antimatter15 ``.splat``.

``load_asset``/``save_asset`` pick the format from the file extension; a file with any other
extension is read as PLY when it starts with the ``ply`` magic line (``.splat`` has no magic).
Every problem with a file's contents raises ``AssetError`` (a ``ValueError``) whose message names
the file and the problem; a missing file is still ``FileNotFoundError``. Readers refuse files of
more than ``max_gaussians`` Gaussians (``DEFAULT_MAX_GAUSSIANS``, 5M; ``None`` lifts it) before
reading their payload, and drop Gaussians with NaN/Inf values with a ``UserWarning``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..gaussians import AssetError, GaussianCloud
from ._validate import DEFAULT_MAX_GAUSSIANS
from .ply import MAGIC as PLY_MAGIC
from .ply import load_ply, save_ply
from .splat import load_splat, save_splat

_LOADERS = {".ply": load_ply, ".splat": load_splat}
_SAVERS = {".ply": save_ply, ".splat": save_splat}

__all__ = ["DEFAULT_MAX_GAUSSIANS", "AssetError", "check_asset_type", "load_asset", "load_ply", "load_splat", "save_asset", "save_ply", "save_splat"]


def load_asset(path: str | os.PathLike, max_gaussians: int | None = DEFAULT_MAX_GAUSSIANS) -> GaussianCloud:
    """A Gaussian cloud from a ``.ply`` or ``.splat`` file (CPU, float32)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _LOADERS:
        with open(path, "rb") as f:
            if not f.read(len(PLY_MAGIC)).startswith(PLY_MAGIC[:3]):
                raise AssetError(f"{path}: unknown asset type {suffix!r}: expected .ply or .splat")
        suffix = ".ply"
    return _LOADERS[suffix](path, max_gaussians)


def check_asset_type(path: str | os.PathLike) -> str:
    """The extension of a path ``save_asset`` can write; raises ``AssetError`` for any other, so
    that a caller can check its output before the work that produces the cloud."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SAVERS:
        raise AssetError(f"{path}: unknown asset type {suffix!r}: expected .ply or .splat")
    return suffix


def save_asset(cloud: GaussianCloud, path: str | os.PathLike) -> None:
    """Write ``cloud`` in the format its extension names (``.ply`` keeps every SH band; ``.splat`` only the DC)."""
    _SAVERS[check_asset_type(path)](cloud, path)
