"""FP8 (e4m3) matrix multiplies for the large Linear layers, on Hopper's FP8 tensor cores.

Each chosen ``nn.Linear`` becomes a ``Float8Linear``: its weight is quantised once to
``float8_e4m3fn`` with one per-tensor scale (amax / 448); each call quantises the activation the
same way from its own amax (computed on the GPU, so the layer stays CUDA-graph capturable) and
runs ``torch._scaled_mm``, which multiplies in FP8, accumulates in FP32 and writes the input's
dtype. Per-tensor e4m3 keeps 3 mantissa bits (relative rounding error up to 2^-4 per element);
the effect on a whole denoising step is measured in the GPU benchmark against FP16.
Convolutions, norms and the attention product itself stay FP16.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import EngineUnavailableError

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max
MIN_FEATURES = 640
"""Linear layers narrower than this (on either side) stay FP16: too little work to gain from FP8."""


def _quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x as float8_e4m3fn with one float32 scale, so that x ~= q * scale.

    amax is one reduction (no |x| copy); x / scale stays in x's dtype (at most 448 in magnitude,
    and FP16's 10 mantissa bits round exactly enough for e4m3's 3).
    """
    scale = (torch.linalg.vector_norm(x.detach(), float("inf")).float() / E4M3_MAX).clamp(min=1e-12)
    return (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


class Float8Linear(nn.Module):
    """``y = x W^T + b`` with W and x in per-tensor-scaled FP8 (see the module docstring)."""

    def __init__(self, linear: nn.Linear, fast_accum: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = _quantize(linear.weight)
        # _scaled_mm wants its second operand column-major: keep W (out, in) row-major, pass W^T.
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.fast_accum = fast_accum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()  # _scaled_mm takes a row-major first operand
        q, scale = _quantize(rows)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = torch._scaled_mm(
            q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, bias=bias, out_dtype=x.dtype, use_fast_accum=self.fast_accum
        )
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, e4m3"


def quantize_linears(module: nn.Module, min_features: int = MIN_FEATURES, fast_accum: bool = False) -> list[str]:
    """Replace (in place) every Linear of at least ``min_features`` in and out, both multiples of
    16 (an FP8 tensor-core requirement), by a Float8Linear. Returns the replaced layers' names."""
    replaced = []
    for name, child in list(module.named_modules()):
        for attr, layer in list(child.named_children()):
            if (
                type(layer) is nn.Linear
                and min(layer.in_features, layer.out_features) >= min_features
                and layer.in_features % 16 == 0
                and layer.out_features % 16 == 0
            ):
                setattr(child, attr, Float8Linear(layer, fast_accum))
                replaced.append(f"{name}.{attr}" if name else attr)
    return replaced


def check_fp8_support(device: torch.device | str) -> None:
    """Raise EngineUnavailableError unless ``device`` has FP8 tensor cores (compute capability >= 8.9)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise EngineUnavailableError("FP8 needs a CUDA GPU with FP8 tensor cores (Ada or Hopper); this engine runs on the CPU")
    if torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise EngineUnavailableError(f"FP8 needs compute capability 8.9 or newer (Ada, Hopper); {name} has {torch.cuda.get_device_capability(device)}")
