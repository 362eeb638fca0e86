"""ONNX graphs of the engines' networks, and onnxruntime sessions to check them against PyTorch.

Export goes through ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the exporter
PyTorch maintains. Weights go to an external-data file beside the graph (``<name>.onnx.data``):
the full UNet is 1.5 B parameters, past protobuf's 2 GB limit. The onnxscript graph optimizer
is off by default: on the full UNet it runs for many minutes and TensorRT folds constants and
fuses layers itself.

An FP16 graph is exported from an FP16 copy of the module, so every weight and activation is
typed float16 in the graph (TensorRT builds it strongly typed, see ``tensorrt.py``); the
timestep and camera ids stay float32 (``Graph.fp32_inputs``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import require
from .graphs import Graph

DEFAULT_MAX_BATCH = 16
"""Upper bound of a dynamic batch axis (clips per call: 2 per photo with guidance)."""


def export_onnx(
    graph: Graph,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    dynamic_batch: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
    optimize: bool = False,
) -> Path:
    """Write ``graph`` as an ONNX model in ``dtype``; the batch axis is symbolic when ``dynamic_batch``.

    Returns the path of the .onnx file (its weights are in ``<path>.data``).
    """
    require("onnxscript", "onnxscript", "export", "ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    typed = graph.to(dtype=dtype)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        dynamic_shapes = tuple(None if axis is None else {axis: batch} for axis in typed.batch_axes.values())
    with torch.no_grad():
        torch.onnx.export(
            typed.module,
            tuple(typed.inputs.values()),
            str(path),
            dynamo=True,
            input_names=list(typed.inputs),
            output_names=list(typed.output_names),
            dynamic_shapes=dynamic_shapes,
            external_data=True,
            optimize=optimize,
            verbose=False,
        )
    return path


class OnnxSession:
    """An onnxruntime session called like the module: tensors in, tensors out (on the CPU).

    onnxruntime's CPU provider lacks float16 kernels for many operators; for those it inserts
    casts and computes in float32, so an FP16 graph run here checks the graph's structure, types
    and FP16-rounded weights, not FP16 arithmetic in every operator.
    """

    def __init__(self, path: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        ort = require("onnxruntime", "onnxruntime", "export", "Running ONNX graphs")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: constant folding warns about every FP16 op it skips
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {name: x.detach().cpu().numpy() for name, x in zip(self.input_names, inputs)}
        return tuple(torch.from_numpy(out) for out in self.session.run(self.output_names, feeds))
