"""Weights for the learned reconstruction: local safetensors files only, never a hub.

A checkpoint folder holds one file per network, each in the layout of the library class that
runs it (the architectures are splatcast's own configs, so no config files are needed):

    sv3d_p_unet.safetensors      SV3DUNet (diffusers UNetSpatioTemporalConditionModel names);
                                 ``convert_sv3d_checkpoint`` makes it from Stability AI's
                                 sv3d_p.safetensors (generative-models layout)
    vae.safetensors              diffusers AutoencoderKL (the Stable Diffusion 2.1 autoencoder)
    image_encoder.safetensors    transformers CLIPVisionModelWithProjection (OpenCLIP ViT-H/14)
    lrt.safetensors              LatentReconstructionTransformer

Everything a user can get wrong (a missing file, a file of another model or size) raises
``CheckpointError`` naming the file and what is wrong with it.

    python -m splatcast.engine.checkpoints convert sv3d_p.safetensors CHECKPOINT_DIR/sv3d_p_unet.safetensors
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .lrt import LatentReconstructionTransformer, LRTConfig
from .synth import SV3DSynthesizer, SV3DUNet, SynthConfig

CHECKPOINT_FILES = {
    "unet": "sv3d_p_unet.safetensors",
    "vae": "vae.safetensors",
    "image_encoder": "image_encoder.safetensors",
    "lrt": "lrt.safetensors",
}
SV3D_UNET_PREFIX = "model.diffusion_model."
"""Where generative-models keeps the UNet inside a full SV3D checkpoint."""


class CheckpointError(ValueError):
    """Checkpoint files are missing or do not fit the network; the message names the files."""


def checkpoint_paths(folder: str | os.PathLike, names: tuple[str, ...] = tuple(CHECKPOINT_FILES)) -> dict[str, Path]:
    """The files for the networks ``names`` in ``folder``; one error naming every missing file."""
    folder = Path(folder)
    paths = {name: folder / CHECKPOINT_FILES[name] for name in names}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise CheckpointError("missing checkpoint file(s): " + ", ".join(missing))
    return paths


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (on the CPU)."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"missing checkpoint file: {path}") from None
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from None


def load_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load ``path`` into ``module``, requiring every tensor to be there with its shape."""
    state = load_state(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [
        f"{len(keys)} {what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{path} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state)


def load_synthesizer(
    folder: str | os.PathLike,
    config: SynthConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    architecture: dict[str, dict] | None = None,
) -> SV3DSynthesizer:
    """SV3D_p with its weights from ``folder``. ``architecture`` overrides the released sizes
    (keys "unet", "vae", "image_encoder": constructor arguments, as ``SV3DSynthesizer.from_config``)."""
    paths = checkpoint_paths(folder, ("unet", "vae", "image_encoder"))
    with torch.device(device):
        synthesizer = SV3DSynthesizer.from_config(config, **(architecture or {}))
    for name, module in synthesizer.modules().items():
        load_weights(module, paths[name])
    return synthesizer.to(device, dtype)


def load_lrt(
    folder: str | os.PathLike,
    config: LRTConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LatentReconstructionTransformer:
    path = checkpoint_paths(folder, ("lrt",))["lrt"]
    with torch.device(device):
        model = LatentReconstructionTransformer(config)
    load_weights(model, path)
    return model.to(device, dtype).eval()


def save_checkpoints(folder: str | os.PathLike, synthesizer: SV3DSynthesizer | None = None, lrt: LatentReconstructionTransformer | None = None) -> None:
    """Write the given networks' weights into ``folder`` under ``CHECKPOINT_FILES`` names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modules = {**(synthesizer.modules() if synthesizer else {}), **({"lrt": lrt} if lrt else {})}
    for name, module in modules.items():
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, folder / CHECKPOINT_FILES[name])


# --- generative-models (sgm VideoUNet) -> diffusers UNetSpatioTemporalConditionModel ----------

_RESBLOCK = [  # VideoResBlock -> SpatioTemporalResBlock
    ("time_stack.in_layers.0.", "temporal_res_block.norm1."),
    ("time_stack.in_layers.2.", "temporal_res_block.conv1."),
    ("time_stack.emb_layers.1.", "temporal_res_block.time_emb_proj."),
    ("time_stack.out_layers.0.", "temporal_res_block.norm2."),
    ("time_stack.out_layers.3.", "temporal_res_block.conv2."),
    ("in_layers.0.", "spatial_res_block.norm1."),
    ("in_layers.2.", "spatial_res_block.conv1."),
    ("emb_layers.1.", "spatial_res_block.time_emb_proj."),
    ("out_layers.0.", "spatial_res_block.norm2."),
    ("out_layers.3.", "spatial_res_block.conv2."),
    ("skip_connection.", "spatial_res_block.conv_shortcut."),
    ("time_mixer.", "time_mixer."),
]
_TRANSFORMER = [  # SpatialVideoTransformer -> TransformerSpatioTemporalModel
    ("time_stack.", "temporal_transformer_blocks."),
    ("time_pos_embed.0.", "time_pos_embed.linear_1."),
    ("time_pos_embed.2.", "time_pos_embed.linear_2."),
    ("", ""),  # norm, proj_in, proj_out, transformer_blocks, time_mixer keep their names
]
_TOP = {
    "time_embed.0.": "time_embedding.linear_1.",
    "time_embed.2.": "time_embedding.linear_2.",
    "label_emb.0.0.": "add_embedding.linear_1.",
    "label_emb.0.2.": "add_embedding.linear_2.",
    "input_blocks.0.0.": "conv_in.",
    "out.0.": "conv_norm_out.",
    "out.2.": "conv_out.",
}


def convert_sv3d_unet(state: dict[str, torch.Tensor], unet_config: dict | None = None) -> dict[str, torch.Tensor]:
    """Rename an SV3D (generative-models ``VideoUNet``) UNet state dict into ``SV3DUNet``'s names.

    ``state`` is a whole SV3D checkpoint (the UNet under ``model.diffusion_model.``) or the UNet's
    own state dict. Every tensor keeps its shape: SV3D's transformers use linear projections, as
    diffusers' do. ``unet_config`` gives ``SV3DUNet``'s constructor arguments (default: released).
    """
    if any(k.startswith(SV3D_UNET_PREFIX) for k in state):
        state = {k[len(SV3D_UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(SV3D_UNET_PREFIX)}
    with torch.device("meta"):
        target = SV3DUNet(**(unet_config or {}))
    layers = target.config.layers_per_block
    up_has_attention = [hasattr(block, "attentions") for block in target.up_blocks]
    expected = target.state_dict()
    converted, unknown = {}, []
    for key, tensor in state.items():
        new = _convert_key(key, layers, up_has_attention)
        if new in expected:
            converted[new] = tensor
        else:
            unknown.append(key)
    missing = sorted(set(expected) - set(converted))
    mismatched = [k for k, v in converted.items() if k in expected and v.shape != expected[k].shape]
    if unknown or missing or mismatched:
        details = [
            f"{len(keys)} {what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for what, keys in (("not SV3D UNet tensors", unknown), ("missing", missing), ("of another shape", mismatched))
            if keys
        ]
        raise CheckpointError("not an SV3D_p UNet of this size: " + "; ".join(details))
    return converted


def _convert_key(key: str, layers: int, up_has_attention: list[bool]) -> str | None:
    """diffusers' name for one sgm VideoUNet tensor name; None when it is not one."""
    for old, new in _TOP.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if match := re.match(r"input_blocks\.(\d+)\.(\d+)\.(.+)", key):
        index, part, rest = int(match[1]) - 1, int(match[2]), match[3]
        level, layer = divmod(index, layers + 1)
        if layer == layers:  # the level's downsampler
            return f"down_blocks.{level}.downsamplers.0.conv.{rest[len('op.'):]}" if rest.startswith("op.") else None
        prefix = f"down_blocks.{level}.{'resnets' if part == 0 else 'attentions'}.{layer}."
        return _rename(prefix, rest, _RESBLOCK if part == 0 else _TRANSFORMER)
    if match := re.match(r"middle_block\.(\d)\.(.+)", key):
        part, rest = int(match[1]), match[2]
        if part == 1:
            return _rename("mid_block.attentions.0.", rest, _TRANSFORMER)
        return _rename(f"mid_block.resnets.{part // 2}.", rest, _RESBLOCK)
    if match := re.match(r"output_blocks\.(\d+)\.(\d+)\.(.+)", key):
        level, layer = divmod(int(match[1]), layers + 1)
        part, rest = int(match[2]), match[3]
        if part == 0:
            return _rename(f"up_blocks.{level}.resnets.{layer}.", rest, _RESBLOCK)
        if part == 1 and up_has_attention[level]:
            return _rename(f"up_blocks.{level}.attentions.{layer}.", rest, _TRANSFORMER)
        return f"up_blocks.{level}.upsamplers.0.{rest}" if rest.startswith("conv.") else None
    return None


def _rename(prefix: str, rest: str, table: list[tuple[str, str]]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return prefix + new + rest[len(old) :]
    return prefix + rest


def convert_sv3d_checkpoint(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Write the UNet of Stability AI's ``sv3d_p.safetensors`` as ``SV3DUNet`` weights."""
    save_file(convert_sv3d_unet(load_state(source)), destination)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splatcast.engine.checkpoints", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="SV3D_p checkpoint (generative-models) -> sv3d_p_unet.safetensors")
    convert.add_argument("source")
    convert.add_argument("destination")
    args = parser.parse_args(argv)
    try:
        convert_sv3d_checkpoint(args.source, args.destination)
    except CheckpointError as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
