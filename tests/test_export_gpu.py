"""Every GPU engine against the eager FP32 module, on fresh random inputs (tiny graphs).

Tolerances, relative L2 error against eager FP32 (TF32 off):
- FP16 (weights and activations): 1e-2; observed errors on these graphs are a few 1e-3.
- FP8 Linear layers on top of FP16: 1e-1 (e4m3 keeps 3 mantissa bits; the full-size per-step
  deviation is measured in benchmarks/test_engines_gpu.py).
No output may hold NaN or inf. The AOTInductor variants compile for about a minute each and
are marked slow; the full-size AOTInductor engine is built, checked and timed by the benchmark.
"""

import pytest
import torch
from splatcast.export.build import relative_error
from splatcast.export.cache import EngineCache
from splatcast.export.fp8 import Float8Linear, _quantize
from splatcast.export.torch_engine import build_torch_engine

from .export_support import tiny_lrt_graph, tiny_step_graph

pytestmark = pytest.mark.gpu

FP16_TOLERANCE = 1e-2
FP8_TOLERANCE = 1e-1
GRAPHS = {"synth_step": tiny_step_graph, "lrt": tiny_lrt_graph}


@pytest.fixture(autouse=True)
def exact_fp32():
    """The reference is true FP32: no TF32 in cuBLAS or cuDNN."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_against_eager(graph, engine, tolerance, trials=3):
    """Fresh inputs per trial (none of them the capture inputs); earlier outputs must survive later calls."""
    generator = torch.Generator().manual_seed(123)
    kept = []
    for _ in range(trials):
        inputs = graph.random_inputs(generator=generator)
        with torch.no_grad():
            reference = graph.module(*inputs.values())
        out = engine(*inputs.values())
        assert out.shape == reference.shape
        assert torch.isfinite(out).all(), "NaN or inf in the engine's output"
        error = relative_error(out, reference)
        assert error < tolerance, f"relative error {error:.2e} over {tolerance:.0e}"
        kept.append((out, reference))
    for out, reference in kept:  # a CUDA-graph engine must not hand out its reusable buffer
        assert relative_error(out, reference) < tolerance


@pytest.mark.parametrize("name", GRAPHS)
def test_fp16_cuda_graph_engine(name):
    graph = GRAPHS[name](device="cuda")
    engine = build_torch_engine(graph)
    assert engine.info["cuda_graph"] and next(engine.graph.module.parameters()).dtype == torch.float16
    check_against_eager(graph, engine, FP16_TOLERANCE)


@pytest.mark.parametrize("name", GRAPHS)
def test_fp8_cuda_graph_engine(name):
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need compute capability 8.9+")
    graph = GRAPHS[name](device="cuda")
    engine = build_torch_engine(graph, fp8=True, fp8_min_features=32)
    assert engine.info["fp8_layers"] > 0
    check_against_eager(graph, engine, FP8_TOLERANCE)


def test_float8_linear_on_gpu_is_the_scaled_product():
    """Two checks on fresh inputs: the activation's quantisation stays within e4m3 rounding of x
    (x / scale is rounded to FP16 first, then to e4m3: at most 2^-4 (1 + 2^-6) relative, plus
    e4m3's subnormal step 2^-9 near zero), and the layer returns the exact product of its own FP8
    operands up to FP32 accumulation and FP16 output rounding (2e-3 relative)."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need compute capability 8.9+")
    linear = torch.nn.Linear(1280, 640, device="cuda", dtype=torch.float16)
    layer = Float8Linear(linear)
    x = torch.randn(4, 300, 1280, device="cuda", dtype=torch.float16)
    q, scale = _quantize(x.reshape(-1, 1280))
    dequantized = q.double() * scale.double()
    bound = 2**-4 * (1 + 2**-6) * x.reshape(-1, 1280).double().abs() + 2**-9 * scale.double()
    assert ((dequantized - x.reshape(-1, 1280).double()).abs() <= bound).all()
    out = layer(x)
    expected = dequantized @ (layer.weight.double() * layer.weight_scale.double()).T + linear.bias.double()
    assert out.dtype == torch.float16
    assert relative_error(out.reshape(-1, 640), expected) < 2e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", GRAPHS)
def test_cached_engine_builds_then_loads_from_cache(name, tmp_path):
    """The AOTInductor package, or where this torch refuses packages, torch.compile with its
    cached artifacts (``torch_engine.REFUSED``): built once, then loaded, within FP16's tolerance."""
    graph = GRAPHS[name](device="cuda")
    cache = EngineCache(tmp_path)
    first = build_torch_engine(graph, cache)
    second = build_torch_engine(graph, cache)
    assert first.info["built"] and not second.info["built"]
    assert second.info["aot"] or (second.info["compiled"] and second.info["aot_refused"])
    check_against_eager(graph, second, FP16_TOLERANCE)


def gpu_pipeline_and_reference():
    """The tiny pipeline on the GPU in FP32, a photo, and its eager FP32 Gaussians."""
    from .recon_configs import tiny_photo, tiny_pipeline

    photo = tiny_photo()
    pipeline = tiny_pipeline()
    pipeline.synthesizer.to("cuda")
    pipeline.lrt.to("cuda")
    (reference,) = pipeline([photo], seed=1, progress=False)
    return pipeline, photo, reference


def check_clouds(cloud, reference, tolerance=FP16_TOLERANCE):
    """Relative L2 error of every Gaussian parameter under ``tolerance``."""
    for name in ("means", "quats", "scales", "opacities", "sh"):
        error = relative_error(getattr(cloud, name), getattr(reference, name))
        assert error < tolerance, f"{name}: relative error {error:.2e}"


def test_pipeline_through_the_fp16_cuda_graph_engine():
    """Without a cache folder the torch engine is FP16 + CUDA graph (no AOTInductor build)."""
    from splatcast.export import EngineConfig

    pipeline, photo, reference = gpu_pipeline_and_reference()
    pipeline.use_engines(EngineConfig(name="torch"))
    (cloud,) = pipeline([photo], seed=1, progress=False)
    engines = [*pipeline.synthesizer.denoiser.engines.values(), *pipeline.reconstructor.engines.values()]
    assert [(e.info["engine"], e.info["cuda_graph"], e.info["aot"]) for e in engines] == [("torch", True, False)] * 2
    assert engines[0].calls == pipeline.synthesizer.config.steps and engines[1].calls == 1
    check_clouds(cloud, reference)


@pytest.mark.slow
def test_pipeline_through_the_torch_engine_builds_once_then_loads(tmp_path):
    """The tiny pipeline through cached (AOTInductor or torch.compile) + CUDA-graph engines in a cache folder, twice: the
    second set comes from the cache, and both give the eager FP32 pipeline's Gaussians within
    FP16's tolerance."""
    from splatcast.export import EngineConfig

    pipeline, photo, reference = gpu_pipeline_and_reference()
    for built in (True, False):
        pipeline.use_engines(EngineConfig(name="torch"), tmp_path)
        (cloud,) = pipeline([photo], seed=1, progress=False)
        engines = [*pipeline.synthesizer.denoiser.engines.values(), *pipeline.reconstructor.engines.values()]
        assert [(e.info["engine"], e.info["aot"] or e.info["compiled"], e.info["built"]) for e in engines] == [("torch", True, built)] * 2
        assert engines[0].calls == pipeline.synthesizer.config.steps and engines[1].calls == 1
        check_clouds(cloud, reference)
