"""Engine selection, the eager reference path, input checking, FP8 layers and fused attention (CPU).

The GPU engines are checked against eager FP32 in test_export_gpu.py; here, everything that
runs without a GPU: which engine a name gives, the clear errors when one cannot run here,
the FP8 layer's arithmetic (torch._scaled_mm runs on the CPU too), and that attention goes
through F.scaled_dot_product_attention.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from splatcast.export import (
    EngineConfig,
    EngineError,
    EngineInputError,
    EngineUnavailableError,
    MissingDependencyError,
    build_engines,
    load_engine,
)
from splatcast.export.build import relative_error
from splatcast.export.cache import EngineCache
from splatcast.export.fp8 import E4M3_MAX, Float8Linear, quantize_linears
from splatcast.export.tensorrt import (
    TensorRTEngine,
    batch_profile,
    build_engine,
    compile_torch_tensorrt,
    load_torch_tensorrt,
)
from torch.utils._python_dispatch import TorchDispatchMode

from .export_support import tiny_lrt_graph, tiny_step_graph

has_cuda = torch.cuda.is_available()


@pytest.fixture(scope="module")
def step_graph():
    return tiny_step_graph()


@pytest.fixture(scope="module")
def lrt_graph():
    return tiny_lrt_graph()


def test_unknown_engine_name_is_a_clear_error():
    with pytest.raises(EngineError, match="unknown engine 'onnxruntime': choose one of eager, torch, tensorrt"):
        EngineConfig(name="onnxruntime")


@pytest.mark.skipif(has_cuda, reason="the default on a machine without a GPU")
def test_default_engine_without_gpu_is_eager():
    assert EngineConfig().name == "eager"


@pytest.mark.parametrize("graph_fixture", ["step_graph", "lrt_graph"])
def test_eager_engine_is_the_module(graph_fixture, request):
    graph = request.getfixturevalue(graph_fixture)
    engine = load_engine(graph, EngineConfig(name="eager"))
    for batch in (graph.batch, 3):  # any batch: eager is not specialised
        inputs = graph.random_inputs(batch)
        with torch.no_grad():
            expected = graph.module(*inputs.values())
        assert torch.equal(engine(*inputs.values()), expected)


def test_engine_inputs_are_checked_and_cast(step_graph):
    engine = load_engine(step_graph, EngineConfig(name="eager"))
    sample, timestep, context, ids = step_graph.random_inputs().values()
    with torch.no_grad():
        expected = step_graph.module(sample, timestep, context, ids)
    # A 0-d timestep (as a scheduler yields it) and float64 inputs are accepted and cast.
    out = engine(sample.double(), timestep.reshape(()), context.double(), ids)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(EngineInputError, match="takes 4 inputs"):
        engine(sample, timestep, context)
    with pytest.raises(EngineInputError, match="input 'encoder_hidden_states' is \\(2, 1, 31\\)"):
        engine(sample, timestep, context[..., :-1], ids)
    with pytest.raises(EngineInputError, match="must be a tensor"):
        engine(sample, 0.5, context, ids)


@pytest.mark.skipif(has_cuda, reason="checks the refusal on a machine without a GPU")
def test_torch_engine_needs_a_gpu_for_cuda_graphs_and_fp8(lrt_graph, tmp_path):
    with pytest.raises(EngineUnavailableError, match="need a CUDA GPU; use the 'eager' engine"):
        load_engine(lrt_graph, EngineConfig(name="torch"), tmp_path)
    with pytest.raises(EngineUnavailableError, match="FP8"):
        load_engine(lrt_graph, EngineConfig(name="torch", fp8=True, cuda_graph=False), tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_missing_names_the_extra(lrt_graph, tmp_path):
    hint = r"pip install 'splatcast\[tensorrt\]'"
    with pytest.raises(MissingDependencyError, match=hint):
        load_engine(lrt_graph, EngineConfig(name="tensorrt"), tmp_path)
    with pytest.raises(MissingDependencyError, match=hint):
        build_engine(tmp_path / "lrt.onnx", tmp_path / "lrt.engine")
    with pytest.raises(MissingDependencyError, match=hint):
        TensorRTEngine(tmp_path / "lrt.engine")
    assert not any(tmp_path.iterdir()), "nothing is written before the missing package is noticed"


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None, reason="torch-tensorrt is installed")
def test_torch_tensorrt_missing_names_the_extra(lrt_graph, tmp_path):
    with pytest.raises(MissingDependencyError, match=r"'torch-tensorrt' package .*pip install 'splatcast\[tensorrt\]'"):
        compile_torch_tensorrt(lrt_graph, tmp_path / "lrt.ep")
    with pytest.raises(MissingDependencyError, match=r"'torch-tensorrt' package .*pip install 'splatcast\[tensorrt\]'"):
        load_torch_tensorrt(tmp_path / "lrt.ep")


def test_batch_profile_varies_only_the_batch_axis(step_graph):
    profile = batch_profile(step_graph, min_batch=1, max_batch=8)
    sample = tuple(step_graph.inputs["sample"].shape[1:])
    assert profile["sample"] == ((1, *sample), (2, *sample), (8, *sample))  # opt: the graph's CFG batch
    assert profile["timestep"] == ((1,), (1,), (1,))
    assert profile["added_time_ids"][2] == (8, 3, 3)
    assert set(profile) == set(step_graph.inputs)
    with pytest.raises(ValueError, match="min_batch <= opt_batch <= max_batch"):
        batch_profile(step_graph, min_batch=4, max_batch=8)


def test_float8_linear_is_the_scaled_product():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    layer = Float8Linear(linear)
    x = torch.randn(3, 5, 64) * 4
    out = layer(x)
    # Reference: the same per-tensor quantisation, multiplied exactly in float64.
    x_scale = x.abs().amax() / E4M3_MAX
    xq = (x / x_scale).to(torch.float8_e4m3fn).double() * x_scale.double()
    wq = layer.weight.double() * layer.weight_scale.double()
    expected = xq @ wq.T + linear.bias.double()
    assert out.shape == (3, 5, 96) and out.dtype == torch.float32
    assert relative_error(out, expected) < 1e-6
    # Against the float layer: e4m3 keeps 3 mantissa bits (2^-4 worst per element).
    assert relative_error(out, linear(x)) < 0.06


def test_quantize_linears_takes_only_large_aligned_layers():
    model = torch.nn.Sequential(torch.nn.Linear(640, 1280), torch.nn.Linear(1280, 648), torch.nn.Linear(648, 320), torch.nn.Sequential(torch.nn.Linear(640, 640)))
    assert quantize_linears(model) == ["0", "3.0"]
    assert isinstance(model[0], Float8Linear) and isinstance(model[3][0], Float8Linear)
    assert type(model[1]) is torch.nn.Linear  # 648 is not a multiple of 16
    assert type(model[2]) is torch.nn.Linear  # 320 is under the size threshold


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("graph_fixture", ["step_graph", "lrt_graph"])
def test_attention_is_fused_sdpa(graph_fixture, request):
    from diffusers.models.attention_processor import Attention

    graph = request.getfixturevalue(graph_fixture)
    attentions = [m for m in graph.module.modules() if isinstance(m, Attention)]
    assert attentions
    with torch.no_grad(), OpCounter() as counter:
        graph.module(*graph.random_inputs().values())
    fused = [op for op in counter.ops if "scaled_dot_product" in op]
    assert len(fused) == len(attentions), "every attention layer runs F.scaled_dot_product_attention once"
    assert "_softmax" not in counter.ops and "softmax" not in counter.ops, "no unfused softmax(QK^T)V"


def test_pipeline_graphs_match_the_pipeline():
    from splatcast.engine.lrt import LatentReconstructionTransformer
    from splatcast.engine.pipeline import ReconstructionPipeline
    from splatcast.export.build import pipeline_graphs

    from .recon_configs import TINY_LRT, tiny_synthesizer

    pipeline = ReconstructionPipeline(tiny_synthesizer(), LatentReconstructionTransformer(TINY_LRT))
    step, lrt = pipeline_graphs(pipeline, photos=2)
    synth = pipeline.synthesizer.config
    assert step.inputs["sample"].shape == (4, synth.num_views, 8, synth.resolution // 8, synth.resolution // 8)
    assert step.inputs["added_time_ids"].shape == (4, synth.num_views, 3)
    assert lrt.inputs["prior_xyz"].shape == (2, pipeline.config.max_prior_tokens, 3)
    assert step.module.unet is pipeline.synthesizer.unet and lrt.module is pipeline.lrt
    for graph in (step, lrt):  # the shapes are ones the networks accept
        with torch.no_grad():
            graph.module(*graph.random_inputs().values())


def test_build_engines_reports_each_graph(step_graph, lrt_graph, tmp_path):
    report = build_engines(EngineConfig(name="eager"), tmp_path, [step_graph, lrt_graph], progress=False)
    assert [(r.graph, r.engine, r.built) for r in report] == [("synth_step", "eager", False), ("lrt", "eager", False)]
    assert all(r.relative_error == 0.0 for r in report)


@pytest.mark.slow
def test_aot_torch_engine_on_cpu_builds_once_then_loads(tmp_path):
    """AOTInductor's package and the cache round trip, on the CPU in FP32 (about a minute)."""
    from splatcast.export.torch_engine import PACKAGE, build_torch_engine

    graph = tiny_lrt_graph()
    cache = EngineCache(tmp_path)
    first = build_torch_engine(graph, cache, dtype=torch.float32, cuda_graph=False)
    second = build_torch_engine(graph, cache, dtype=torch.float32, cuda_graph=False)
    assert first.info["built"] and not second.info["built"]
    assert first.info["aot"] and second.info["aot"]  # the package passed its out-of-process check
    inputs = graph.random_inputs()
    with torch.no_grad():
        reference = graph.module(*inputs.values())
    assert relative_error(second(*inputs.values()), reference) < 1e-5
    package = next(tmp_path.glob(f"lrt-torch-aoti-*/{PACKAGE}"))
    package.write_bytes(package.read_bytes()[:-100])  # truncated: rebuilt, never loaded
    third = build_torch_engine(graph, cache, dtype=torch.float32, cuda_graph=False)
    assert third.info["built"]
    assert relative_error(third(*inputs.values()), reference) < 1e-5


def test_a_package_that_cannot_load_is_refused_with_the_reason(tmp_path):
    from splatcast.export.torch_engine import probe_package

    package = tmp_path / "model.pt2"
    package.write_bytes(b"not a package")
    failure = probe_package(package, tiny_lrt_graph())
    assert failure is not None and failure.lasting
    assert "exit status 1" in failure.reason and "child process" in failure.reason


def test_a_refused_one_layer_package_spares_compiling_the_graph(tmp_path):
    """Where even the one-layer probe package was refused, the graph's own package (minutes of
    compiling for the UNet) is not built: its entry records the refusal at once."""

    from splatcast.export.cache import EngineKey
    from splatcast.export.torch_engine import PACKAGE, REFUSED, build_package, probe_graph

    graph, cache = tiny_lrt_graph(), EngineCache(tmp_path)
    probe_key = EngineKey.for_graph(probe_graph(graph.device, graph.dtype), "torch-aoti", "probe")
    cache.get_or_build(probe_key, lambda folder: (folder / REFUSED).write_text(json.dumps({"reason": "signal 11"})))
    folder = tmp_path / "entry"
    folder.mkdir()
    build_package(graph, cache, folder)
    assert not (folder / PACKAGE).exists()
    assert json.loads((folder / REFUSED).read_text())["reason"] == "a one-layer package was refused: signal 11"


@pytest.mark.slow
def test_a_check_that_times_out_is_not_recorded_and_runs_again_next_start(tmp_path, monkeypatch):
    """A package check that times out may pass next time: this start compiles with
    torch.compile instead, nothing is written under the package's key, and the next start
    builds the package again and, its check passing, runs it."""
    from splatcast.export import torch_engine

    graph = tiny_lrt_graph()
    monkeypatch.setattr(torch_engine, "PROBE_TIMEOUT_S", 0.01)
    first = torch_engine.build_torch_engine(graph, EngineCache(tmp_path), dtype=torch.float32, cuda_graph=False)
    assert first.info["compiled"] and "took over" in first.info["aot_refused"] and "next start" in first.info["aot_refused"]
    assert not list(tmp_path.glob("lrt-torch-aoti-*"))
    monkeypatch.setattr(torch_engine, "PROBE_TIMEOUT_S", 600)
    second = torch_engine.build_torch_engine(graph, EngineCache(tmp_path), dtype=torch.float32, cuda_graph=False)
    assert second.info["aot"] and second.info["built"] and not second.info["compiled"]
    inputs = graph.random_inputs()
    with torch.no_grad():
        reference = graph.module(*inputs.values())
    for engine in (first, second):
        assert relative_error(engine(*inputs.values()), reference) < 1e-5


def refuse_package(cache_root, graph) -> str:
    """A cache entry that records a refused package (see ``torch_engine.REFUSED``), as the GPU
    image whose AOTInductor loader crashes leaves one; returns the reason recorded."""

    from splatcast.export.cache import EngineKey, state_dict_digest
    from splatcast.export.torch_engine import REFUSED

    key = EngineKey.for_graph(graph.to(dtype=torch.float32), "torch-aoti", state_dict_digest(graph.module), fp8=False)
    reason = "loading and running the package failed in a child process (signal 11): "
    EngineCache(cache_root).get_or_build(key, lambda folder: (folder / REFUSED).write_text(json.dumps({"reason": reason})))
    return reason


ENGINE_START = """
import json, sys, torch
from torch._dynamo.utils import counters
from splatcast.export.build import relative_error
from splatcast.export.cache import EngineCache
from splatcast.export.torch_engine import build_torch_engine
from tests.export_support import tiny_lrt_graph
graph = tiny_lrt_graph()
engine = build_torch_engine(graph, EngineCache(sys.argv[1]), dtype=torch.float32, cuda_graph=False)
inputs = graph.random_inputs()
with torch.no_grad():
    error = relative_error(engine(*inputs.values()), graph.module(*inputs.values()))
print(json.dumps({**engine.info, "error": error, **counters["inductor"]}))
"""


@pytest.mark.slow
def test_a_refused_package_falls_back_to_torch_compile_with_cached_artifacts(tmp_path):
    """Where AOTInductor packages are refused the engine runs ``torch.compile``, says so, and
    keeps Inductor's artifacts in the engine cache: a second start (a new process with an
    empty Inductor cache of its own) compiles from those artifacts (FX graph cache hits, no
    misses). A truncated artifact file is rebuilt, never loaded. Outputs match the module
    (FP32: relative error <= 1e-5, Inductor reorders floating-point sums)."""
    from pathlib import Path

    from splatcast.export.torch_engine import INDUCTOR_ARTIFACTS, build_torch_engine

    engines = tmp_path / "engines"
    reason = refuse_package(engines, tiny_lrt_graph())

    def start(name: str) -> dict:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{name}")}
        child = subprocess.run([sys.executable, "-c", ENGINE_START, str(engines)], capture_output=True, text=True,
                               env=env, cwd=Path(__file__).parents[1], timeout=600)
        assert child.returncode == 0, child.stderr[-2000:]
        return json.loads(child.stdout.strip().splitlines()[-1])

    first, second = start("first"), start("second")
    assert first["aot_refused"] == reason and first["compiled"] and first["built"] and first["error"] < 1e-5
    assert second["compiled"] and not second["built"] and second["error"] < 1e-5
    assert second.get("fxgraph_cache_hit", 0) > 0 and second.get("fxgraph_cache_miss", 0) == 0, second

    artifacts = next(engines.glob(f"lrt-torch-compile-*/{INDUCTOR_ARTIFACTS}"))
    artifacts.write_bytes(artifacts.read_bytes()[:-100])
    assert build_torch_engine(tiny_lrt_graph(), EngineCache(engines), dtype=torch.float32, cuda_graph=False).info["built"]
