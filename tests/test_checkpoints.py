"""Checkpoint loading and the SV3D (generative-models) -> diffusers UNet converter.

The converter is checked on a synthetic state dict that has the names and shapes Stability AI's
``sv3d_p.safetensors`` has, written out here from generative-models' ``VideoUNet`` construction
(sgm/modules/diffusionmodules/video_model.py, video_attention.py, openaimodel.py) at a tiny width.
"""

from collections import Counter

import pytest
import torch
from safetensors.torch import save_file
from splatcast.engine.checkpoints import (
    CHECKPOINT_FILES,
    CheckpointError,
    checkpoint_paths,
    convert_sv3d_unet,
    load_lrt,
    load_state,
    load_synthesizer,
    load_weights,
    save_checkpoints,
)
from splatcast.engine.checkpoints import main as checkpoints_main
from splatcast.engine.lrt import LatentReconstructionTransformer
from splatcast.engine.synth import SV3DUNet

from .recon_configs import TINY_LRT, TINY_SYNTH, tiny_synthesizer

MODEL_CHANNELS, CHANNEL_MULT, HEAD_CHANNELS, CONTEXT_DIM, ADM = 32, (1, 2, 4, 4), 16, 24, (8, 16, 16)
ATTENTION_LEVELS = (0, 1, 2)  # attention_resolutions [4, 2, 1]: every level but the coarsest
UNET_CONFIG = {
    "block_out_channels": tuple(MODEL_CHANNELS * m for m in CHANNEL_MULT),
    "num_attention_heads": tuple(MODEL_CHANNELS * m // HEAD_CHANNELS for m in CHANNEL_MULT),
    "cross_attention_dim": CONTEXT_DIM,
    "added_time_dims": ADM,
}


def sgm_video_unet_shapes(in_channels=8, out_channels=4, num_res_blocks=2) -> dict[str, tuple[int, ...]]:
    """Names and shapes of an SV3D_p UNet checkpoint (``model.diffusion_model.*``) at this width."""
    shapes = {}
    ch, emb = MODEL_CHANNELS, 4 * MODEL_CHANNELS

    def linear(name, n_in, n_out, bias=True):
        shapes[f"{name}.weight"] = (n_out, n_in)
        if bias:
            shapes[f"{name}.bias"] = (n_out,)

    def norm(name, c):
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (c,)

    def conv(name, n_in, n_out, kernel=(3, 3)):
        shapes[f"{name}.weight"] = (n_out, n_in, *kernel)
        shapes[f"{name}.bias"] = (n_out,)

    def resblock(name, n_in, n_out):  # VideoResBlock: ResBlock + time_stack (3D, kernel [3, 1, 1]) + AlphaBlender
        norm(f"{name}.in_layers.0", n_in)
        conv(f"{name}.in_layers.2", n_in, n_out)
        linear(f"{name}.emb_layers.1", emb, n_out)
        norm(f"{name}.out_layers.0", n_out)
        conv(f"{name}.out_layers.3", n_out, n_out)
        if n_in != n_out:
            conv(f"{name}.skip_connection", n_in, n_out, (1, 1))
        norm(f"{name}.time_stack.in_layers.0", n_out)
        conv(f"{name}.time_stack.in_layers.2", n_out, n_out, (3, 1, 1))
        linear(f"{name}.time_stack.emb_layers.1", emb, n_out)
        norm(f"{name}.time_stack.out_layers.0", n_out)
        conv(f"{name}.time_stack.out_layers.3", n_out, n_out, (3, 1, 1))
        shapes[f"{name}.time_mixer.mix_factor"] = (1,)

    def attention(name, c, context):
        for proj, n_in in (("to_q", c), ("to_k", context), ("to_v", context)):
            linear(f"{name}.{proj}", n_in, c, bias=False)
        linear(f"{name}.to_out.0", c, c)

    def feed_forward(name, c, n_out):  # GEGLU
        linear(f"{name}.net.0.proj", c, 8 * c)
        linear(f"{name}.net.2", 4 * c, n_out)

    def transformer(name, c):  # SpatialVideoTransformer, use_linear, ff_in (extra_ff_mix_layer), spatial context
        norm(f"{name}.norm", c)
        linear(f"{name}.proj_in", c, c)
        block = f"{name}.transformer_blocks.0"
        attention(f"{block}.attn1", c, c)
        feed_forward(f"{block}.ff", c, c)
        attention(f"{block}.attn2", c, CONTEXT_DIM)
        for i in (1, 2, 3):
            norm(f"{block}.norm{i}", c)
        block = f"{name}.time_stack.0"
        norm(f"{block}.norm_in", c)
        feed_forward(f"{block}.ff_in", c, c)
        attention(f"{block}.attn1", c, c)
        feed_forward(f"{block}.ff", c, c)
        attention(f"{block}.attn2", c, CONTEXT_DIM)
        for i in (1, 2, 3):
            norm(f"{block}.norm{i}", c)
        linear(f"{name}.time_pos_embed.0", c, 4 * c)
        linear(f"{name}.time_pos_embed.2", 4 * c, c)
        shapes[f"{name}.time_mixer.mix_factor"] = (1,)
        linear(f"{name}.proj_out", c, c)

    linear("time_embed.0", ch, emb)
    linear("time_embed.2", emb, emb)
    linear("label_emb.0.0", sum(ADM), emb)
    linear("label_emb.0.2", emb, emb)
    conv("input_blocks.0.0", in_channels, ch)
    skips, index = [ch], 1
    for level, mult in enumerate(CHANNEL_MULT):
        for _ in range(num_res_blocks):
            resblock(f"input_blocks.{index}.0", ch, mult * MODEL_CHANNELS)
            ch = mult * MODEL_CHANNELS
            if level in ATTENTION_LEVELS:
                transformer(f"input_blocks.{index}.1", ch)
            skips.append(ch)
            index += 1
        if level != len(CHANNEL_MULT) - 1:
            conv(f"input_blocks.{index}.0.op", ch, ch)
            skips.append(ch)
            index += 1
    resblock("middle_block.0", ch, ch)
    transformer("middle_block.1", ch)
    resblock("middle_block.2", ch, ch)
    index = 0
    for level, mult in reversed(list(enumerate(CHANNEL_MULT))):
        for i in range(num_res_blocks + 1):
            resblock(f"output_blocks.{index}.0", ch + skips.pop(), mult * MODEL_CHANNELS)
            ch = mult * MODEL_CHANNELS
            part = 1
            if level in ATTENTION_LEVELS:
                transformer(f"output_blocks.{index}.1", ch)
                part = 2
            if level and i == num_res_blocks:
                conv(f"output_blocks.{index}.{part}.conv", ch, ch)
            index += 1
    norm("out.0", ch)
    conv("out.2", ch, out_channels)
    return {f"model.diffusion_model.{k}": v for k, v in shapes.items()}


def sv3d_checkpoint(seed=0) -> dict[str, torch.Tensor]:
    """A whole SV3D_p checkpoint's worth of UNet tensors plus a few of its other parts."""
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=g) for k, shape in sgm_video_unet_shapes().items()}
    state["conditioner.embedders.0.open_clip.model.visual.proj"] = torch.randn(4, 4, generator=g)
    state["first_stage_model.encoder.conv_in.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    return state


def test_converter_maps_every_sv3d_tensor_onto_the_unet():
    state = sv3d_checkpoint()
    converted = convert_sv3d_unet(state, UNET_CONFIG)
    unet = SV3DUNet(**UNET_CONFIG)
    assert set(converted) == set(unet.state_dict())
    unet.load_state_dict(converted, strict=True)
    # One to one: every UNet tensor came from a distinct source tensor, unchanged.
    sources = {id(v) for k, v in state.items() if k.startswith("model.diffusion_model.")}
    assert len({id(v) for v in converted.values()}) == len(converted) == len(sources)
    assert {id(v) for v in converted.values()} == sources


@pytest.mark.parametrize(
    ("sgm", "diffusers"),
    [
        ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
        ("input_blocks.1.0.in_layers.2.weight", "down_blocks.0.resnets.0.spatial_res_block.conv1.weight"),
        ("input_blocks.1.0.time_stack.out_layers.3.weight", "down_blocks.0.resnets.0.temporal_res_block.conv2.weight"),
        ("input_blocks.2.1.time_stack.0.attn2.to_k.weight", "down_blocks.0.attentions.1.temporal_transformer_blocks.0.attn2.to_k.weight"),
        ("input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.spatial_res_block.conv_shortcut.weight"),
        ("input_blocks.9.0.op.weight", "down_blocks.2.downsamplers.0.conv.weight"),
        ("input_blocks.11.0.time_mixer.mix_factor", "down_blocks.3.resnets.1.time_mixer.mix_factor"),
        ("middle_block.1.time_pos_embed.2.bias", "mid_block.attentions.0.time_pos_embed.linear_2.bias"),
        ("middle_block.2.emb_layers.1.weight", "mid_block.resnets.1.spatial_res_block.time_emb_proj.weight"),
        ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
        ("output_blocks.5.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight"),
        ("output_blocks.7.1.transformer_blocks.0.ff.net.0.proj.weight", "up_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj.weight"),
        ("output_blocks.11.1.proj_out.weight", "up_blocks.3.attentions.2.proj_out.weight"),
        ("out.2.weight", "conv_out.weight"),
    ],
)
def test_converter_puts_tensors_where_diffusers_runs_them(sgm, diffusers):
    state = sv3d_checkpoint()
    assert convert_sv3d_unet(state, UNET_CONFIG)[diffusers] is state[f"model.diffusion_model.{sgm}"]


def test_converter_names_what_does_not_fit():
    state = sv3d_checkpoint()
    del state["model.diffusion_model.middle_block.1.proj_in.weight"]
    state["model.diffusion_model.input_blocks.1.7.weight"] = torch.zeros(1)
    state["model.diffusion_model.out.2.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as error:
        convert_sv3d_unet(state, UNET_CONFIG)
    message = str(error.value)
    assert "mid_block.attentions.0.proj_in.weight" in message
    assert "input_blocks.1.7.weight" in message
    assert "conv_out.bias" in message


def test_conversion_writes_loadable_weights(tmp_path, capsys):
    source = tmp_path / "sv3d_p.safetensors"
    save_file(sv3d_checkpoint(), source)
    target = tmp_path / "unet.safetensors"
    save_file(convert_sv3d_unet(load_state(source), UNET_CONFIG), target)
    load_weights(SV3DUNet(**UNET_CONFIG), target)
    # The command converts to the released sizes: a tiny checkpoint is refused with the reason.
    with pytest.raises(SystemExit) as exit_info:
        checkpoints_main(["convert", str(source), str(tmp_path / "released.safetensors")])
    assert exit_info.value.code == 1
    assert "not an SV3D_p UNet" in capsys.readouterr().err
    assert not (tmp_path / "released.safetensors").exists()


def test_missing_files_are_all_named(tmp_path):
    (tmp_path / CHECKPOINT_FILES["vae"]).write_bytes(b"")
    with pytest.raises(CheckpointError) as error:
        checkpoint_paths(tmp_path)
    missing = [name for name in CHECKPOINT_FILES.values() if name in str(error.value)]
    assert Counter(missing) == Counter(n for k, n in CHECKPOINT_FILES.items() if k != "vae")


def test_unreadable_or_foreign_files_are_named(tmp_path):
    bad = tmp_path / "lrt.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="lrt.safetensors"):
        load_lrt(tmp_path, TINY_LRT)
    save_file({"weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="missing"):
        load_lrt(tmp_path, TINY_LRT)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    synthesizer = tiny_synthesizer()
    lrt = LatentReconstructionTransformer(TINY_LRT).eval()
    save_checkpoints(tmp_path, synthesizer, lrt)
    loaded_lrt = load_lrt(tmp_path, TINY_LRT)
    loaded = load_synthesizer(tmp_path, synthesizer.config, architecture=TINY_SYNTH)
    for name, module in synthesizer.modules().items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, loaded.modules()[name].state_dict()[key]), f"{name}.{key}"
    for key, value in lrt.state_dict().items():
        assert torch.equal(value, loaded_lrt.state_dict()[key]), key
    # The loaded networks compute what the saved ones did (CLIP and VAE in the conditioning,
    # the UNet in the prediction).
    r = synthesizer.config.resolution
    images = torch.rand(1, 3, r, r, generator=torch.Generator().manual_seed(2))
    latents = torch.randn(1, synthesizer.config.num_views, 4, r // 8, r // 8, generator=torch.Generator().manual_seed(3))
    first = synthesizer.guided_prediction(latents, torch.tensor(0.3), synthesizer.condition(images, 5.0, torch.Generator().manual_seed(4)))
    again = loaded.guided_prediction(latents, torch.tensor(0.3), loaded.condition(images, 5.0, torch.Generator().manual_seed(4)))
    assert torch.equal(first, again)
