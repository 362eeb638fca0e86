"""HumanSplat's latent reconstruction transformer: view latents + body prior -> 3D Gaussians.

Input: the latents of V views (the photo's own and generated ones; V = 4 in HumanSplat), each
latent pixel a token of its latent channels and the Plücker coordinates of its ray (``rays``),
all views' tokens attending to each other. The network is U-shaped, as LGM's: levels of
transformer blocks at the latent grid, then at 1/2, 1/4, ... of it (2x2 tokens merged by a linear
layer), and back up (a linear layer expands each token into 2x2, concatenated with the skip
from the way down and fused). Every block first cross-attends to the body-structure prior,
then self-attends, then applies its MLP (pre-norm residuals).

Prior tokens: body-model vertices projected into the photo's view, its latent sampled there
(bilinearly) and the vertex's xyz appended, lifted to ``prior_width`` by an MLP.

Output: the finest level's features resized to ``gaussian_size`` squared per view and a linear
head to one Gaussian per output pixel (V * gaussian_size^2 in all: 65,536 at the defaults), with
LGM's activations: position clamped to the [-1, 1]^3 object box, opacity sigmoid, scale
0.1 softplus, rotation normalised (wxyz), colour 0.5 tanh + 0.5. All in the object frame that
the rays and the prior's xyz are given in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from ..gaussians import GaussianCloud, rgb_to_sh0

GAUSSIAN_CHANNELS = 14
"""Per Gaussian: position 3, opacity 1, scale 3, rotation 4 (wxyz), colour 3."""


@dataclass(frozen=True)
class LRTConfig:
    """Sizes. ``dims``/``depths``: token width and blocks per U level (finest first; the way up
    repeats every level but the coarsest). ``latent_size``: latent pixels per view side (576 / 8)."""

    latent_channels: int = 4
    num_views: int = 4
    latent_size: int = 72
    dims: tuple[int, ...] = (256, 512, 1024)
    depths: tuple[int, ...] = (2, 2, 4)
    head_dim: int = 64
    prior_width: int = 256
    gaussian_size: int = 128

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.depths) or not self.dims:
            raise ValueError(f"dims {self.dims} and depths {self.depths} must be non-empty and of one length")
        if self.latent_size % 2 ** (len(self.dims) - 1):
            raise ValueError(f"latent_size {self.latent_size} must halve {len(self.dims) - 1} times")
        if any(d % self.head_dim for d in self.dims):
            raise ValueError(f"every width in {self.dims} must be a multiple of head_dim {self.head_dim}")

    @property
    def num_gaussians(self) -> int:
        return self.num_views * self.gaussian_size**2

    def to_dict(self) -> dict:
        return asdict(self)


class PriorBlock(nn.Module):
    """Cross-attention to the prior, self-attention over all views' tokens, MLP; pre-norm."""

    def __init__(self, dim: int, prior_width: int, head_dim: int):
        super().__init__()
        heads = dim // head_dim
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, cross_attention_dim=prior_width, heads=heads, dim_head=head_dim)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads=heads, dim_head=head_dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="gelu")

    def forward(self, tokens: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.cross_attn(self.norm_cross(tokens), encoder_hidden_states=prior)
        tokens = tokens + self.self_attn(self.norm_self(tokens))
        return tokens + self.ff(self.norm_ff(tokens))


class Level(nn.ModuleList):
    """The blocks of one U level, over tokens laid out (B, V, h, w, C)."""

    def __init__(self, dim: int, depth: int, prior_width: int, head_dim: int):
        super().__init__(PriorBlock(dim, prior_width, head_dim) for _ in range(depth))

    def forward(self, grid: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        tokens = grid.flatten(1, 3)
        for block in self:
            tokens = block(tokens, prior)
        return tokens.reshape(grid.shape)


def merge_2x2(grid: torch.Tensor) -> torch.Tensor:
    """(B, V, h, w, C) -> (B, V, h/2, w/2, 4C): each 2x2 patch of tokens side by side."""
    b, v, h, w, c = grid.shape
    return grid.reshape(b, v, h // 2, 2, w // 2, 2, c).transpose(3, 4).reshape(b, v, h // 2, w // 2, 4 * c)


def split_2x2(grid: torch.Tensor) -> torch.Tensor:
    """The inverse of ``merge_2x2``: (B, V, h, w, 4C) -> (B, V, 2h, 2w, C)."""
    b, v, h, w, c4 = grid.shape
    return grid.reshape(b, v, h, w, 2, 2, c4 // 4).transpose(3, 4).reshape(b, v, 2 * h, 2 * w, c4 // 4)


class LatentReconstructionTransformer(nn.Module):
    def __init__(self, config: LRTConfig | None = None):
        super().__init__()
        self.config = cfg = config or LRTConfig()
        dims = cfg.dims
        self.embed = nn.Linear(cfg.latent_channels + 6, dims[0])
        self.prior_embed = nn.Sequential(
            nn.Linear(cfg.latent_channels + 3, cfg.prior_width), nn.GELU(), nn.Linear(cfg.prior_width, cfg.prior_width)
        )
        self.down = nn.ModuleList(Level(d, n, cfg.prior_width, cfg.head_dim) for d, n in zip(dims, cfg.depths))
        self.merge = nn.ModuleList(nn.Linear(4 * dims[i], dims[i + 1]) for i in range(len(dims) - 1))
        self.expand = nn.ModuleList(nn.Linear(dims[i + 1], 4 * dims[i]) for i in range(len(dims) - 1))
        self.fuse = nn.ModuleList(nn.Linear(2 * dims[i], dims[i]) for i in range(len(dims) - 1))
        self.up = nn.ModuleList(Level(dims[i], cfg.depths[i], cfg.prior_width, cfg.head_dim) for i in range(len(dims) - 1))
        self.norm_out = nn.LayerNorm(dims[0])
        self.head = nn.Linear(dims[0], GAUSSIAN_CHANNELS)

    def forward(self, latents: torch.Tensor, rays: torch.Tensor, prior_xyz: torch.Tensor, prior_uv: torch.Tensor) -> torch.Tensor:
        """Activated Gaussian parameters (B, V * gaussian_size^2, 14), view-major, row-major per view.

        latents (B, V, latent_channels, h, w), view 0 the photo's; rays (B, V, 6, h, w) Plücker
        coordinates in the object frame; prior_xyz (B, P, 3) body vertices in the object frame;
        prior_uv (B, P, 2) where they project in view 0, in ``grid_sample``'s [-1, 1] coordinates
        (x right, y down; vertices outside the view sample zeros).
        """
        cfg = self.config
        b, v, _, h, w = latents.shape
        if (v, h, w) != (cfg.num_views, cfg.latent_size, cfg.latent_size) or rays.shape != (b, v, 6, h, w):
            raise ValueError(
                f"expected latents (B, {cfg.num_views}, {cfg.latent_channels}, {cfg.latent_size}, {cfg.latent_size}) "
                f"and rays (B, {cfg.num_views}, 6, ...), got {tuple(latents.shape)} and {tuple(rays.shape)}"
            )
        prior = self.prior_tokens(latents[:, 0], prior_xyz, prior_uv)
        grid = self.embed(torch.cat([latents, rays.to(latents.dtype)], dim=2).permute(0, 1, 3, 4, 2))
        skips = []
        for i, level in enumerate(self.down):
            grid = level(grid, prior)
            if i < len(self.merge):
                skips.append(grid)
                grid = self.merge[i](merge_2x2(grid))
        for i in reversed(range(len(self.up))):
            grid = self.fuse[i](torch.cat([split_2x2(self.expand[i](grid)), skips[i]], dim=-1))
            grid = self.up[i](grid, prior)
        features = grid.flatten(0, 1).permute(0, 3, 1, 2)  # (B V, C, h, w)
        size = cfg.gaussian_size
        features = F.interpolate(features, size=(size, size), mode="bilinear", align_corners=False)
        raw = self.head(self.norm_out(features.permute(0, 2, 3, 1))).reshape(b, v * size * size, GAUSSIAN_CHANNELS)
        return activate(raw)

    def prior_tokens(self, input_latent: torch.Tensor, xyz: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """(B, P, prior_width): the photo's latent at each vertex's projection, with its xyz, lifted."""
        sampled = F.grid_sample(input_latent, uv[:, :, None, :].to(input_latent.dtype), mode="bilinear", align_corners=False)
        return self.prior_embed(torch.cat([sampled[..., 0].transpose(1, 2), xyz.to(input_latent.dtype)], dim=-1))


def activate(raw: torch.Tensor) -> torch.Tensor:
    """LGM's activations on raw head outputs (..., 14)."""
    position, opacity, scale, rotation, colour = raw.split([3, 1, 3, 4, 3], dim=-1)
    return torch.cat(
        [
            position.clamp(-1, 1),
            torch.sigmoid(opacity),
            0.1 * F.softplus(scale),
            F.normalize(rotation, dim=-1),
            0.5 * torch.tanh(colour) + 0.5,
        ],
        dim=-1,
    )


def to_cloud(params: torch.Tensor) -> GaussianCloud:
    """One item's activated parameters (N, 14) as a ``GaussianCloud`` (SH degree 0, float32)."""
    params = params.float()
    position, opacity, scale, rotation, colour = params.split([3, 1, 3, 4, 3], dim=-1)
    return GaussianCloud(position, rotation, scale, opacity[:, 0], rgb_to_sh0(colour)[:, None])
