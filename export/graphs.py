"""What an engine compiles: one network call with tensors in and tensors out.

A ``Graph`` pairs a module with example inputs (their order is the forward's positional order,
their names become the ONNX/TensorRT tensor names) and says which axis of each input is the
batch, so exporters can make that axis dynamic and engines can check what they are given.
The synthesizer's graph is one denoising step of the video UNet with classifier-free guidance's
two halves stacked as one batch (batch 2 per photo); the reconstruction transformer's graph is
one forward pass.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .errors import EngineInputError


@dataclass(frozen=True)
class Graph:
    """A module called as ``module(*inputs.values())`` returning one tensor or a tuple of them.

    ``batch_axes`` maps each input name to its batch axis, or None for inputs shared by the whole
    batch (a diffusion timestep). Inputs named in ``fp32_inputs`` stay float32 whatever the
    engine's precision: they feed sinusoidal embeddings that are computed in float32 anyway.
    """

    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    batch_axes: dict[str, int | None]
    output_names: tuple[str, ...]
    fp32_inputs: frozenset[str] = field(default_factory=frozenset)

    @property
    def batch(self) -> int:
        name, axis = next((n, a) for n, a in self.batch_axes.items() if a is not None)
        return self.inputs[name].shape[axis]

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.module.parameters())

    @property
    def device(self) -> torch.device:
        return next(p.device for p in self.module.parameters())

    def signature(self) -> tuple[tuple[str, tuple[int, ...], str], ...]:
        """(name, shape, dtype) of every input: what a static engine is specialised to."""
        return tuple((n, tuple(x.shape), str(x.dtype).removeprefix("torch.")) for n, x in self.inputs.items())

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Graph:
        """A copy in another precision and/or on another device (the caller's module is untouched)."""
        module = copy.deepcopy(self.module).to(device=device, dtype=dtype).eval()
        inputs = {n: self._cast(n, x, dtype, device) for n, x in self.inputs.items()}
        return replace(self, module=module, inputs=inputs)

    def random_inputs(self, batch: int | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Fresh standard-normal inputs of this graph's shapes and dtypes (batch resized if given)."""
        inputs = {}
        for name, x in self.inputs.items():
            shape = list(x.shape)
            axis = self.batch_axes[name]
            if batch is not None and axis is not None:
                shape[axis] = batch
            sample = torch.randn(shape, generator=generator, dtype=torch.float32)
            inputs[name] = sample.to(device=x.device, dtype=x.dtype)
        return inputs

    def conform(self, inputs: tuple[torch.Tensor, ...], static: bool = True) -> tuple[torch.Tensor, ...]:
        """``inputs`` checked against this graph's and cast to its dtypes (EngineInputError if they
        do not fit). Shapes must match exactly when ``static``, else up to the batch axis; a
        one-element tensor is accepted for a one-element input (a 0-d timestep for a (1,) one)."""
        if len(inputs) != len(self.inputs):
            raise EngineInputError(f"{self.name} takes {len(self.inputs)} inputs ({', '.join(self.inputs)}), got {len(inputs)}")
        conformed = []
        for (name, expected), x in zip(self.inputs.items(), inputs):
            if not isinstance(x, torch.Tensor):
                raise EngineInputError(f"{self.name}: input '{name}' must be a tensor, got {type(x).__name__}")
            if expected.numel() == 1 and x.numel() == 1:
                x = x.reshape(expected.shape)
            axis = self.batch_axes[name]
            want, got = list(expected.shape), list(x.shape)
            if not static and axis is not None and len(got) == len(want):
                got[axis] = want[axis]
            if got != want or x.device != expected.device:
                raise EngineInputError(
                    f"{self.name}: input '{name}' is {tuple(x.shape)} on {x.device}; this engine takes "
                    f"{tuple(expected.shape)}{'' if static else ' (any batch)'} on {expected.device}"
                )
            conformed.append(x.to(expected.dtype))
        return tuple(conformed)

    def _cast(self, name: str, x: torch.Tensor, dtype: torch.dtype | None, device) -> torch.Tensor:
        keep = name in self.fp32_inputs or not x.is_floating_point()
        return x.to(device=device, dtype=None if keep else dtype)


class DenoiseStep(nn.Module):
    """One call of the synthesizer's video UNet, returning the bare network output tensor.

    Works for splatcast's ``SV3DUNet`` (per-frame ids (B, T, 3), returns a tensor) and for stock
    diffusers ``UNetSpatioTemporalConditionModel`` (per-clip ids (B, 3), returns an output object).
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids):
        out = self.unet(sample, timestep, encoder_hidden_states, added_time_ids)
        return out if isinstance(out, torch.Tensor) else out.sample


def synth_step_graph(unet: nn.Module, *, batch: int = 2, frames: int | None = None, height: int = 576, width: int = 576) -> Graph:
    """One denoising step of the video UNet at ``height`` x ``width`` pixels (latents 8x smaller).

    ``batch`` counts clips: 2 per photo, the unconditional and conditional halves of
    classifier-free guidance run as one batch. ``frames`` defaults to the UNet's ``num_frames``.
    Inputs: sample (B, T, C_in, h, w); timestep (1,) EDM c_noise shared by the batch;
    encoder_hidden_states (B, 1, D) CLIP image embedding; added_time_ids per frame (B, T, n) for
    SV3D_p (``config.added_time_dims``) or per clip (B, n) for stock SVD.
    """
    config = unet.config
    frames = frames or config.num_frames
    device, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
    if "added_time_dims" in config:
        time_ids = torch.zeros(batch, frames, len(config.added_time_dims))
    else:
        time_ids = torch.zeros(batch, config.projection_class_embeddings_input_dim // config.addition_time_embed_dim)
    inputs = {
        "sample": torch.zeros(batch, frames, config.in_channels, height // 8, width // 8, dtype=dtype),
        "timestep": torch.zeros(1),
        "encoder_hidden_states": torch.zeros(batch, 1, config.cross_attention_dim, dtype=dtype),
        "added_time_ids": time_ids,
    }
    return Graph(
        name="synth_step",
        module=DenoiseStep(unet).eval(),
        inputs={n: x.to(device) for n, x in inputs.items()},
        batch_axes={"sample": 0, "timestep": None, "encoder_hidden_states": 0, "added_time_ids": 0},
        output_names=("model_output",),
        fp32_inputs=frozenset({"timestep", "added_time_ids"}),
    )


def lrt_graph(lrt: nn.Module, *, prior_points: int, batch: int = 1) -> Graph:
    """One forward pass of the latent reconstruction transformer for ``batch`` photos.

    Inputs (see ``LatentReconstructionTransformer.forward``): latents (B, V, C, s, s), rays
    (B, V, 6, s, s), prior_xyz (B, P, 3), prior_uv (B, P, 2) with P = ``prior_points`` body
    vertices; output the activated Gaussians (B, V * gaussian_size^2, 14).
    """
    config = lrt.config
    device, dtype = next(lrt.parameters()).device, next(lrt.parameters()).dtype
    views, side = config.num_views, config.latent_size
    shapes = {
        "latents": (batch, views, config.latent_channels, side, side),
        "rays": (batch, views, 6, side, side),
        "prior_xyz": (batch, prior_points, 3),
        "prior_uv": (batch, prior_points, 2),
    }
    return Graph(
        name="lrt",
        module=lrt.eval(),
        inputs={n: torch.zeros(shape, device=device, dtype=dtype) for n, shape in shapes.items()},
        batch_axes=dict.fromkeys(shapes, 0),
        output_names=("gaussians",),
    )


@dataclass
class Engine:
    """A built graph, called like the graph's module (no autograd).

    Inputs are checked with ``Graph.conform`` (exact shapes when ``static``) and cast to the
    engine's dtypes, so callers may pass float32; outputs come in the engine's precision.
    ``info`` records how it was built (engine, precision, cache hit, seconds); ``calls`` counts
    the calls it has run, so a caller can see which path did the work.
    """

    graph: Graph
    run: Callable
    info: dict = field(default_factory=dict)
    static: bool = True
    calls: int = 0

    @torch.inference_mode()
    def __call__(self, *inputs: torch.Tensor):
        outputs = self.run(*self.graph.conform(inputs, self.static))
        self.calls += 1
        return outputs
