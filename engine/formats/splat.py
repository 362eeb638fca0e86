"""The antimatter15 ``.splat`` file: 32 bytes per Gaussian, the compact format of web splat viewers.

Each record, little-endian, no header::

    float32 x 3   centre, metres
    float32 x 3   per-axis standard deviation, metres (activated, not log)
    uint8 x 4     RGBA: round(clamp(0.5 + SH_C0 * sh0, 0, 1) * 255), round(opacity * 255)
    uint8 x 4     rotation wxyz: round(clamp(q * 128 + 128, 0, 255)) of the unit quaternion

Writers sort by scale_x * scale_y * scale_z * opacity, largest first, as antimatter15's converter
does (viewers that stream the file show the biggest splats first). We round where that converter
truncates, halving the quantisation error; the viewers' decoding, (b - 128) / 128 and b / 255, is
the same. Only the SH DC band survives: reading gives SH degree 0, and writing drops bands >= 1 and
clamps colours to [0, 1].

Round-trip tolerance (tested): centres and scales exact; colour and opacity within 0.5 / 255
(so sh0 within 0.5 / 255 / SH_C0); quaternion components within 1 / 128 up to sign (measured: 0.7 / 128).

Reading policy, as for PLY (``AssetError`` naming the file and the problem): empty files, sizes not a
multiple of 32 and more Gaussians than ``max_gaussians`` (checked from the file size, before reading)
are refused; Gaussians with NaN/Inf centres or scales are dropped with a ``UserWarning`` giving the
count; negative scales and a zero rotation (all four bytes 128) are refused.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..gaussians import AssetError, GaussianCloud, rgb_to_sh0, sh0_to_rgb
from ._validate import DEFAULT_MAX_GAUSSIANS, check_count, check_finite, check_rotations, warn_dropped

RECORD = np.dtype([("means", "<f4", 3), ("scales", "<f4", 3), ("rgba", "u1", 4), ("quats", "u1", 4)])


def load_splat(path: str | os.PathLike, max_gaussians: int | None = DEFAULT_MAX_GAUSSIANS) -> GaussianCloud:
    """A degree-0 Gaussian cloud from a ``.splat`` file (policy in the module docstring)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise AssetError(f"{path}: file is empty")
        if size % RECORD.itemsize:
            raise AssetError(
                f"{path}: {size} bytes is not a whole number of {RECORD.itemsize}-byte .splat records "
                f"({size % RECORD.itemsize} bytes left over)"
            )
        count = size // RECORD.itemsize
        check_count(path, count, max_gaussians)
        records = np.empty(count, RECORD)
        if f.readinto(records.view(np.uint8)) != size:
            raise AssetError(f"{path}: file shrank while being read")

    finite = np.isfinite(records["means"]).all(1) & np.isfinite(records["scales"]).all(1)
    records = records[finite]
    if (records["scales"] < 0).any():
        raise AssetError(f"{path}: {int((records['scales'] < 0).any(1).sum())} Gaussians have negative scales")
    quats = (torch.from_numpy(records["quats"].astype(np.float32)) - 128) / 128
    check_rotations(path, quats)
    rgba = torch.from_numpy(records["rgba"].astype(np.float32)) / 255
    cloud = GaussianCloud(
        means=torch.from_numpy(records["means"].copy()),
        quats=torch.nn.functional.normalize(quats, dim=1),
        scales=torch.from_numpy(records["scales"].copy()),
        opacities=rgba[:, 3],
        sh=rgb_to_sh0(rgba[:, None, :3]),
    )
    warn_dropped(path, count - len(cloud), count)
    return cloud


def save_splat(cloud: GaussianCloud, path: str | os.PathLike) -> None:
    """Write ``cloud`` as ``.splat``, biggest-and-most-opaque first (see the module docstring)."""
    check_finite(path, cloud)
    if len(cloud) == 0:
        raise AssetError(f"{path}: a .splat file of no Gaussians would be an empty file, which no reader accepts")
    cloud = cloud.to("cpu", torch.float32)
    order = torch.argsort(cloud.scales.double().prod(1) * cloud.opacities.double(), descending=True, stable=True)
    cloud = cloud.subset(order)

    def quantise(values: torch.Tensor, scale: float, offset: float) -> np.ndarray:
        return (values * scale + offset).round().clamp(0, 255).to(torch.uint8).numpy()

    records = np.empty(len(cloud), RECORD)
    records["means"] = cloud.means.numpy()
    records["scales"] = cloud.scales.numpy()
    records["rgba"][:, :3] = quantise(sh0_to_rgb(cloud.sh[:, 0]), 255, 0)
    records["rgba"][:, 3] = quantise(cloud.opacities, 255, 0)
    records["quats"] = quantise(cloud.quats, 128, 128)
    with open(path, "wb") as f:
        f.write(records.tobytes())
