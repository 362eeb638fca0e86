"""SV3D_p's video UNet: diffusers' spatio-temporal UNet with per-frame camera conditioning.

SV3D_p (Voleti et al., ECCV 2024) is Stable Video Diffusion's UNet trained to orbit an object.
Its frames are views, so what SVD conditions once per clip (fps, motion bucket, noise
augmentation) SV3D_p conditions once per *frame*: the vector ``[cond_aug, polar, azimuth]``
(radians for the angles), each entry a sinusoidal embedding of its own width and the three
concatenated into ``projection_class_embeddings_input_dim`` channels, then projected by
``add_embedding`` and added to the timestep embedding of that frame. In the official config
(generative-models ``sv3d_p.yaml``: ``adm_in_channels: 1280`` from ``ConcatTimestepEmbedderND``
with ``outdim`` 256, 512 and 512) the widths are 256 for ``cond_aug`` and 512 for each angle.

diffusers' ``UNetSpatioTemporalConditionModel`` embeds every added id at the one width
``addition_time_embed_dim`` and broadcasts the result over the clip's frames, so it can hold
SV3D_p's weights but not run its conditioning; ``SV3DUNet`` keeps its blocks and weights layout
(every parameter name and shape is the parent's) and replaces only the conditioning path.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import Timesteps
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel

SV3D_P_ADDED_TIME_DIMS = (256, 512, 512)
"""Sinusoidal widths of SV3D_p's per-frame ids: cond_aug, polar, azimuth."""


class SV3DUNet(UNetSpatioTemporalConditionModel):
    """The SV3D_p UNet: 8 input channels (noisy latent + input-view latent), 4 output channels.

    The defaults are the released model's: 320 base channels x (1, 2, 4, 4), 64-channel heads,
    1024-d CLIP context, 21 frames. ``added_time_dims`` gives each per-frame id's embedding width.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        added_time_dims: tuple[int, ...] = SV3D_P_ADDED_TIME_DIMS,
        layers_per_block: int = 2,
        cross_attention_dim: int = 1024,
        transformer_layers_per_block: int = 1,
        num_attention_heads: tuple[int, ...] = (5, 10, 20, 20),
        num_frames: int = 21,
    ):
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            addition_time_embed_dim=added_time_dims[0],
            projection_class_embeddings_input_dim=sum(added_time_dims),
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            num_attention_heads=num_attention_heads,
            num_frames=num_frames,
        )
        # One sinusoidal embedding per id, at its own width (parameter-free: the weights layout
        # stays the parent's).
        self.add_time_proj = torch.nn.ModuleList(Timesteps(dim, True, downscale_freq_shift=0) for dim in added_time_dims)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
    ) -> torch.Tensor:
        """The network output (SV3D: a v-prediction) for a batch of clips.

        sample (B, T, in_channels, h, w); timestep: a number or (B,) (EDM's c_noise = log(sigma) / 4);
        encoder_hidden_states (B, 1, cross_attention_dim); added_time_ids (B, T, len(added_time_dims)),
        per frame [cond_aug, polar, azimuth]. Returns (B, T, out_channels, h, w).
        """
        batch_size, num_frames = sample.shape[:2]
        if added_time_ids.shape != (batch_size, num_frames, len(self.add_time_proj)):
            raise ValueError(
                f"added_time_ids must be (batch, frames, {len(self.add_time_proj)}) = "
                f"({batch_size}, {num_frames}, {len(self.add_time_proj)}), got {tuple(added_time_ids.shape)}"
            )
        timesteps = torch.as_tensor(timestep, dtype=torch.float32, device=sample.device).reshape(-1).expand(batch_size)
        emb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        emb = emb.repeat_interleave(num_frames, dim=0)
        ids = added_time_ids.flatten(0, 1)
        time_embeds = torch.cat([proj(ids[:, i]) for i, proj in enumerate(self.add_time_proj)], dim=1)
        emb = emb + self.add_embedding(time_embeds.to(emb.dtype))
        context = encoder_hidden_states.repeat_interleave(num_frames, dim=0)
        return self._denoise(sample.flatten(0, 1), emb, context, batch_size, num_frames)

    def _denoise(self, sample: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, batch_size: int, num_frames: int) -> torch.Tensor:
        """The parent's down, mid and up path over (B*T) frames with per-frame embeddings ``emb``."""
        upsample_factor = 2**self.num_upsamplers
        forward_upsample_size = any(s % upsample_factor for s in sample.shape[-2:])
        indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)

        sample = self.conv_in(sample)
        skips = (sample,)
        for block in self.down_blocks:
            kwargs = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            sample, res = block(hidden_states=sample, temb=emb, image_only_indicator=indicator, **kwargs)
            skips += res
        sample = self.mid_block(hidden_states=sample, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
        for i, block in enumerate(self.up_blocks):
            res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:] if forward_upsample_size and i < len(self.up_blocks) - 1 else None
            kwargs = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            sample = block(
                hidden_states=sample, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size, image_only_indicator=indicator, **kwargs
            )
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return sample.reshape(batch_size, num_frames, *sample.shape[1:])
