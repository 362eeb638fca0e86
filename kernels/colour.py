"""8-bit RGB -> I420 planes as libswscale converts them by default (BT.601, limited range).

The pure-PyTorch reference for the CUDA conversion (``csrc/i420.cu``), and the conversion the
server may run on any device. libswscale's default rgb24 -> yuv420p path averages horizontal
pixel pairs and filters vertically with taps (1, 3, 3, 1) / 8 over rows 2j-1 .. 2j+2 (edges
repeated), which puts chroma between the two luma rows it covers; these formulas land within one
level of it on frames at least 8 pixels tall (checked against PyAV in tests/test_colour.py).
"""

from __future__ import annotations

import torch

LUMA = (65.481, 128.553, 24.966)
"""Y = 16 + (LUMA . rgb) / 255 for rgb in 0..255: BT.601 scaled to the 16..235 range."""
BLUE_DIFFERENCE = (-37.797, -74.203, 112.0)
RED_DIFFERENCE = (112.0, -93.786, -18.214)
"""U, V = 128 + (. rgb) / 255: BT.601 colour differences scaled to 16..240."""


def _level(value: torch.Tensor) -> torch.Tensor:
    return (value + 0.5).clamp(0, 255).to(torch.uint8)


def _weighted(rgb: torch.Tensor, weights: tuple[float, float, float], offset: float) -> torch.Tensor:
    r, g, b = rgb.unbind(-1)
    return offset + (weights[0] * r + weights[1] * g + weights[2] * b) / 255


def rgb_to_i420(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., H, W, 3) uint8 RGB -> Y (..., H, W), U and V (..., H/2, W/2) uint8; H, W even."""
    if rgb.dtype != torch.uint8 or rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) uint8 RGB, got {tuple(rgb.shape)} {rgb.dtype}")
    height, width = rgb.shape[-3], rgb.shape[-2]
    if height % 2 or width % 2:
        raise ValueError(f"I420 needs an even frame size, got {width}x{height}")
    pixels = rgb.float()
    y = _level(_weighted(pixels, LUMA, 16.0))
    pairs = pixels.unflatten(-2, (width // 2, 2)).mean(-2)  # (..., H, W/2, 3)
    rows = torch.arange(0, height, 2, device=rgb.device)

    def row(k: int) -> torch.Tensor:
        return pairs.index_select(-3, (rows + k).clamp(0, height - 1))

    chroma = (row(-1) + 3 * row(0) + 3 * row(1) + row(2)) / 8
    return y, _level(_weighted(chroma, BLUE_DIFFERENCE, 128.0)), _level(_weighted(chroma, RED_DIFFERENCE, 128.0))


def i420_planes(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (3H/2, W) ``yuv420p`` frame (Y rows, then U, then V) -> views of its Y, U and V planes."""
    height, width = frame.shape[0] * 2 // 3, frame.shape[1]
    flat = frame.reshape(-1)
    chroma = (height // 2) * (width // 2)
    luma = height * width
    return (
        flat[:luma].view(height, width),
        flat[luma : luma + chroma].view(height // 2, width // 2),
        flat[luma + chroma :].view(height // 2, width // 2),
    )
