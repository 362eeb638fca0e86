"""Real spherical harmonics up to degree 3, in the band order and signs of the 3DGS reference code."""

from __future__ import annotations

import torch

from ..engine.gaussians import SH_C0

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """Basis values (..., (degree+1)^2) at unit ``directions`` (..., 3)."""
    x, y, z = directions.unbind(-1)
    basis = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        basis += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(basis, dim=-1)


def eval_sh_colours(sh: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """RGB (..., N, 3) seen along unit ``directions`` (..., N, 3) for coefficients ``sh`` (N, K, 3).

    colour = max(0.5 + sum_k Y_k(d) sh_k, 0), as the 3DGS rasterizer does.
    """
    degree = round(sh.shape[-2] ** 0.5) - 1
    basis = sh_basis(directions, degree)
    return (torch.einsum("...nk,nkc->...nc", basis, sh) + 0.5).clamp_min(0.0)
