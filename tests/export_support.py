"""Tiny graphs of the real architectures for the engine tests (random weights, CPU-fast export)."""

import torch
from splatcast.engine.lrt import LatentReconstructionTransformer
from splatcast.engine.synth import SV3DUNet
from splatcast.export.graphs import lrt_graph, synth_step_graph

from .recon_configs import TINY_LRT

# Two U levels (one with cross-attention, one without) of SV3D_p's UNet: every block type the
# released model has, at the smallest size its ONNX export and AOTInductor build stay quick.
TINY_STEP_UNET = {
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "block_out_channels": (32, 64),
    "num_attention_heads": (2, 4),
    "cross_attention_dim": 32,
    "layers_per_block": 1,
    "added_time_dims": (8, 16, 16),
    "num_frames": 3,
}
PRIOR_POINTS = 40


def tiny_step_graph(batch: int = 2, seed: int = 0, device: str = "cpu"):
    """One guided denoising step (batch 2 = CFG's halves) of 3 views at 64x64 pixels."""
    torch.manual_seed(seed)
    return synth_step_graph(SV3DUNet(**TINY_STEP_UNET).to(device), batch=batch, height=64, width=64)


def tiny_lrt_graph(batch: int = 1, seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    return lrt_graph(LatentReconstructionTransformer(TINY_LRT).to(device), prior_points=PRIOR_POINTS, batch=batch)
