"""The one Gaussian asset type that every layer passes around.

Conventions (held everywhere in splatcast):
- World space is right-handed, metres, y up (the WebXR/OpenGL world), avatars stand on y = 0
  looking down +z towards a default camera.
- ``GaussianCloud`` holds the *activated* form: the values the renderer uses directly.
  File formats store the *raw* form of 3DGS training (logit opacity, log scale, unnormalised
  quaternion); ``to_raw`` / ``from_raw`` convert.
- Quaternions are unit, scalar first (wxyz), rotating the Gaussian's local frame into the world.
- ``sh`` holds real spherical-harmonic colour coefficients, shape ``(N, K, 3)`` with
  ``K = (degree + 1) ** 2`` in the standard 3DGS band order; colour = 0.5 + sum_k Y_k(d) sh_k,
  clamped at 0, where d is the unit direction from the camera centre to the Gaussian.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

SH_C0 = 0.28209479177387814
"""Y_0^0, the constant band: colour = 0.5 + SH_C0 * sh[:, 0]."""


class AssetError(ValueError):
    """A Gaussian asset (file or tensors) is malformed; the message says what and where."""


def sh_degree_for(num_coeffs: int) -> int:
    """SH degree from a coefficient count (1, 4, 9, 16 -> 0..3)."""
    degree = round(num_coeffs**0.5) - 1
    if (degree + 1) ** 2 != num_coeffs or not 0 <= degree <= 3:
        raise AssetError(f"{num_coeffs} SH coefficients per channel is not (d+1)^2 for d in 0..3")
    return degree


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """The DC coefficient that reproduces a view-independent colour in [0, 1]."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


@dataclass(frozen=True)
class GaussianCloud:
    """N anisotropic 3D Gaussians in the activated form (see module docstring).

    means (N, 3) metres; quats (N, 4) unit wxyz; scales (N, 3) standard deviations in metres;
    opacities (N,) in [0, 1]; sh (N, K, 3) with K = (degree + 1)^2.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        expected = {
            "means": (n, 3),
            "quats": (n, 4),
            "scales": (n, 3),
            "opacities": (n,),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise AssetError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise AssetError(f"sh has shape {tuple(self.sh.shape)}, expected ({n}, K, 3)")
        sh_degree_for(self.sh.shape[1])

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_for(self.sh.shape[1])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GaussianCloud:
        return GaussianCloud(**{f.name: getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)})

    def subset(self, index: torch.Tensor) -> GaussianCloud:
        """The Gaussians picked by a boolean mask or an index tensor."""
        return GaussianCloud(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Axis-aligned bounds of the centres, (min xyz, max xyz); zeros when empty."""
        if len(self) == 0:
            zero = self.means.new_zeros(3)
            return zero, zero
        return self.means.amin(0), self.means.amax(0)

    def finite_mask(self) -> torch.Tensor:
        """True for Gaussians whose every attribute is finite."""
        return (
            self.means.isfinite().all(1)
            & self.quats.isfinite().all(1)
            & self.scales.isfinite().all(1)
            & self.opacities.isfinite()
            & self.sh.isfinite().all(2).all(1)
        )

    def to_raw(self) -> dict[str, torch.Tensor]:
        """The 3DGS training form: logit opacity, log scale (what INRIA PLY files store)."""
        eps = 1e-7
        opacity = self.opacities.clamp(eps, 1 - eps)
        return {
            "means": self.means,
            "quats": self.quats,
            "log_scales": self.scales.clamp_min(1e-12).log(),
            "opacity_logits": torch.log(opacity / (1 - opacity)),
            "sh": self.sh,
        }

    @classmethod
    def from_raw(
        cls,
        means: torch.Tensor,
        quats: torch.Tensor,
        log_scales: torch.Tensor,
        opacity_logits: torch.Tensor,
        sh: torch.Tensor,
    ) -> GaussianCloud:
        """Apply the 3DGS activations: sigmoid opacity, exp scale, normalised quaternion."""
        norm = quats.norm(dim=-1, keepdim=True)
        if bool((norm == 0).any()):
            raise AssetError("a rotation quaternion has zero length")
        return cls(means, quats / norm, log_scales.exp(), torch.sigmoid(opacity_logits), sh)

    @classmethod
    def empty(cls, sh_degree: int = 0) -> GaussianCloud:
        k = (sh_degree + 1) ** 2
        return cls(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, k, 3))


def random_cloud(
    n: int,
    sh_degree: int = 3,
    extent: float = 1.0,
    scale_range: tuple[float, float] = (0.005, 0.05),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> GaussianCloud:
    """A random cloud inside a box of half-size ``extent`` around the origin (tests, benchmarks)."""
    g = generator
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * extent
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    lo, hi = scale_range
    log_scales = torch.rand(n, 3, generator=g) * (torch.tensor(hi).log() - torch.tensor(lo).log()) + torch.tensor(lo).log()
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    k = (sh_degree + 1) ** 2
    sh = torch.randn(n, k, 3, generator=g) * 0.3
    sh[:, 0] = rgb_to_sh0(torch.rand(n, 3, generator=g))
    return GaussianCloud(means, quats, log_scales.exp(), opacities, sh).to(device)
