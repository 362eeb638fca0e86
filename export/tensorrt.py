"""TensorRT FP16 engines, built from the ONNX graphs (``onnx.py``) or through torch-tensorrt.

Needs the ``tensorrt`` extra (``pip install 'splatcast[tensorrt]'``), imported only when used.
TensorRT could not be installed on the project's machines, so nothing in this module beyond
``batch_profile`` and the missing-package error has been run: it is written against the
documented Python API of TensorRT 10 and 11 (see the README's engine table).

Precision comes from the graph: an FP16 ONNX export types every weight and activation float16,
and the network is built *strongly typed* (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``,
required from TensorRT 10.12 on for mixed precision and always on in 11, where the weak-typing
``BuilderFlag.FP16`` was removed). Dynamic batch uses one optimization profile (min/opt/max
batch); kernel timings persist in a timing-cache file so rebuilds and other graphs on the same
GPU skip re-timing. The runtime binds torch CUDA tensors by address and enqueues on torch's
current stream: no copies, no synchronisation.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .cache import EngineCache, EngineKey, state_dict_digest
from .errors import EngineError, EngineInputError, EngineUnavailableError, require
from .graphs import Engine, Graph
from .onnx import DEFAULT_MAX_BATCH, export_onnx

ENGINE_FILE = "model.engine"

Shape = tuple[int, ...]


def _tensorrt():
    return require("tensorrt", "tensorrt", "tensorrt", "The TensorRT engine")


def batch_profile(graph: Graph, min_batch: int = 1, opt_batch: int | None = None, max_batch: int = DEFAULT_MAX_BATCH) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shape of every input for one optimization profile over the batch axis.

    ``opt_batch`` (the size TensorRT tunes kernels for) defaults to the graph's own batch.
    Inputs without a batch axis keep their shape in all three.
    """
    opt_batch = graph.batch if opt_batch is None else opt_batch
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    profile = {}
    for name, x in graph.inputs.items():
        axis = graph.batch_axes[name]
        shapes = []
        for batch in (min_batch, opt_batch, max_batch):
            shape = list(x.shape)
            if axis is not None:
                shape[axis] = batch
            shapes.append(tuple(shape))
        profile[name] = tuple(shapes)
    return profile


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    profile: dict[str, tuple[Shape, Shape, Shape]] | None = None,
    timing_cache: str | Path | None = None,
    workspace_bytes: int | None = None,
) -> Path:
    """Build and serialize a TensorRT engine from an ONNX graph (FP16 when the graph is FP16).

    ``profile`` is required when the graph has a dynamic batch (see ``batch_profile``).
    ``timing_cache`` is read if it exists and written back after the build.
    """
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file, so external weights resolve
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if profile:
        optimization_profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.items():
            optimization_profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(optimization_profile)
    if timing_cache is not None:
        timing_cache = Path(timing_cache)
        cached = timing_cache.read_bytes() if timing_cache.exists() else b""
        # A cache from another GPU or TensorRT version is refused: start from an empty one.
        if not config.set_timing_cache(config.create_timing_cache(cached), ignore_mismatch=False):
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {onnx_path} (its log above says why)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_path


class TensorRTEngine:
    """A deserialized engine called like the module: CUDA tensors in, new CUDA tensors out.

    Inputs are bound by their ``data_ptr`` (made contiguous first if they are not) and outputs
    are allocated by torch's caching allocator; ``execute_async_v3`` runs on torch's current
    stream, so the call is ordered with the surrounding torch work and never synchronises.
    """

    def __init__(self, engine_path: str | Path):
        trt = _tensorrt()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT could not load {engine_path}: built by another TensorRT version or for another GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        dtypes = {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.BF16: torch.bfloat16,
            trt.DataType.INT32: torch.int32,
            trt.DataType.INT64: torch.int64,
            trt.DataType.BOOL: torch.bool,
        }
        self.dtypes = {n: dtypes[self.engine.get_tensor_dtype(n)] for n in names}

    def __call__(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise EngineInputError(f"this engine takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        bound = []
        for name, x in zip(self.input_names, inputs):
            if not x.is_cuda or x.dtype != self.dtypes[name]:
                raise EngineInputError(f"input '{name}' must be a CUDA {self.dtypes[name]} tensor, got {x.dtype} on {x.device}")
            x = x.contiguous()
            if not self.context.set_input_shape(name, tuple(x.shape)):
                raise EngineInputError(f"input '{name}' of shape {tuple(x.shape)} is outside the engine's optimization profile")
            self.context.set_tensor_address(name, x.data_ptr())
            bound.append(x)
        outputs = []
        for name in self.output_names:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device=bound[0].device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        if not self.context.execute_async_v3(torch.cuda.current_stream(bound[0].device).cuda_stream):
            raise EngineError("TensorRT failed to enqueue the engine (its log above says why)")
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def compile_torch_tensorrt(
    graph: Graph,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    max_batch: int = DEFAULT_MAX_BATCH,
    timing_cache: str | Path | None = None,
) -> Path:
    """The alternative front end: torch.export the graph (dynamic batch) and let torch-tensorrt
    convert it, saved as an ExportedProgram that ``load_torch_tensorrt`` reads back."""
    torch_tensorrt = require("torch_tensorrt", "torch-tensorrt", "tensorrt", "The torch-tensorrt front end")
    typed = graph.to(dtype=dtype)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    dynamic_shapes = tuple(None if axis is None else {axis: batch} for axis in typed.batch_axes.values())
    example = tuple(typed.inputs.values())
    program = torch.export.export(typed.module, example, dynamic_shapes=dynamic_shapes)
    specs = [
        torch_tensorrt.Input(min_shape=low, opt_shape=opt, max_shape=high, dtype=x.dtype)
        for (low, opt, high), x in zip(batch_profile(typed, max_batch=max_batch).values(), example)
    ]
    options = {"timing_cache_path": str(timing_cache)} if timing_cache is not None else {}
    module = torch_tensorrt.dynamo.compile(program, arg_inputs=specs, use_explicit_typing=True, **options)
    path = Path(path)
    torch_tensorrt.save(module, str(path), output_format="exported_program", arg_inputs=list(example), dynamic_shapes=dynamic_shapes)
    return path


def load_torch_tensorrt(path: str | Path):
    """A module saved by ``compile_torch_tensorrt``, ready to call."""
    torch_tensorrt = require("torch_tensorrt", "torch-tensorrt", "tensorrt", "The torch-tensorrt front end")
    return torch_tensorrt.load(str(path)).module()


def check_tensorrt(device: torch.device | str) -> None:
    """Raise MissingDependencyError without the ``tensorrt`` package, EngineUnavailableError
    unless ``device`` is a CUDA GPU."""
    _tensorrt()
    if torch.device(device).type != "cuda":
        raise EngineUnavailableError("TensorRT engines need a CUDA GPU; move the model to one or use the 'eager' engine")


def build_tensorrt_engine(graph: Graph, cache: EngineCache, *, max_batch: int = DEFAULT_MAX_BATCH, weights: str | None = None) -> Engine:
    """The TensorRT FP16 engine for ``graph`` (dynamic batch up to ``max_batch``), from ``cache``
    or built there: FP16 ONNX export, strongly typed build, one timing cache per GPU."""
    check_tensorrt(graph.device)
    start = time.perf_counter()
    typed = graph.to(dtype=torch.float16)
    key = EngineKey.for_graph(typed, "tensorrt", weights or state_dict_digest(graph.module), max_batch=max_batch)
    gpu = key.device.replace(" ", "_")
    timing_cache = cache.root / f"tensorrt-timing-{gpu}-sm{key.capability}.cache"

    def build(folder: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:  # the ONNX graph (weights included) is not kept
            onnx_path = export_onnx(typed, Path(scratch) / f"{graph.name}.onnx", dtype=torch.float16, dynamic_batch=True, max_batch=max_batch)
            build_engine(onnx_path, folder / ENGINE_FILE, profile=batch_profile(typed, max_batch=max_batch), timing_cache=timing_cache)

    entry, built = cache.get_or_build(key, build)
    run = TensorRTEngine(entry.file(ENGINE_FILE))
    typed.module.to("meta")  # the engine holds the weights
    info = {"engine": "tensorrt", "dtype": "float16", "built": built, "max_batch": max_batch, "prepare_s": round(time.perf_counter() - start, 3)}
    return Engine(typed, run, info, static=False)
