"""The synthesizer's denoising step and the reconstruction transformer on each engine (issue 5).

Full-size architectures with random weights (the compute of trained ones): SV3D_p's UNet at
21 views x 576^2 with classifier-free guidance as one batch of 2 clips (42 frames of 72^2
latents), and the transformer at its defaults (4 views of 72^2 latents, 2048 prior tokens,
65,536 Gaussians out). Per variant: the step time (median of CUDA-event timed calls after
warm-up; every call ends synchronised) and the relative L2 error of its output against the
eager FP32 module (TF32 off) on one fixed input set; FP8's deviation from the FP16 engine on
the same inputs besides. The AOTInductor engine's build time and cached start (key digest,
checksum of the package, load, CUDA-graph capture) are timed in the same process.

Every figure goes to the JSON at $SPLATCAST_ENGINES_JSON as soon as it is measured, so a run cut
short by its time limit keeps what it measured; tests that would not finish before
$SPLATCAST_DEADLINE (epoch seconds) skip and say so.

    SPLATCAST_ENGINES_JSON=$OUT/engines.json SPLATCAST_DEADLINE=$(( $(date +%s) + 450 )) \
        python -m pytest benchmarks/test_engines_gpu.py --benchmark-json=$OUT/engines-benchmark.json
"""

import json
import math
import os
import platform
import statistics
import time

import pytest
import torch

pytestmark = pytest.mark.gpu
diffusers = pytest.importorskip("diffusers")

from splatcast.engine.lrt import LatentReconstructionTransformer
from splatcast.engine.synth import SV3DUNet
from splatcast.export.build import relative_error
from splatcast.export.cache import EngineCache
from splatcast.export.graphs import lrt_graph, synth_step_graph
from splatcast.export.torch_engine import build_torch_engine

VIEWS, RESOLUTION, CFG_BATCH, PRIOR_TOKENS = 21, 576, 2, 2048
ROUNDS, WARMUP = 10, 2
TARGET_MS = {"synth_step": 80.0, "lrt": 30.0}
RESULTS = {
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "diffusers": diffusers.__version__,
    "python": platform.python_version(),
    "date": time.strftime("%Y-%m-%d"),
    "commit": os.environ.get("SPLATCAST_COMMIT", ""),
    "shapes": {"views": VIEWS, "resolution": RESOLUTION, "cfg_batch": CFG_BATCH, "prior_tokens": PRIOR_TOKENS},
    "targets_ms": TARGET_MS,
    "results": {},
    "not_run": {},
}


def record(name: str, **figures) -> None:
    RESULTS["results"][name] = figures
    _write()


def _write() -> None:
    path = os.environ.get("SPLATCAST_ENGINES_JSON")
    if path:
        with open(path, "w") as f:
            json.dump(RESULTS, f, indent=1)


def need_seconds(name: str, seconds: float) -> None:
    """Skip (and say so in the JSON) unless ``seconds`` remain before the run's deadline."""
    deadline = float(os.environ.get("SPLATCAST_DEADLINE", "inf"))
    left = deadline - time.time()
    if left < seconds:
        RESULTS["not_run"][name] = f"needs about {seconds:.0f} s, {left:.0f} s left in this run"
        _write()
        pytest.skip(RESULTS["not_run"][name])


def gpu_time(benchmark, call) -> dict:
    """pytest-benchmark around ``call``; each call between two CUDA events, synchronised."""
    events = []

    def once():
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        events.append((start, end))

    benchmark.pedantic(once, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    times = sorted(s.elapsed_time(e) for s, e in events[-ROUNDS:])
    figures = {"median_ms": round(statistics.median(times), 3), "min_ms": round(times[0], 3), "max_ms": round(times[-1], 3)}
    benchmark.extra_info.update(figures)
    return figures


@pytest.fixture(scope="module", autouse=True)
def exact_fp32():
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True


@pytest.fixture(scope="module")
def step():
    """SV3D_p's UNet in FP32 on the GPU, its step graph, fixed inputs and the FP32 output."""
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device("cuda"):  # initialised on the GPU; .to() moves what diffusers builds on the CPU regardless
        unet = SV3DUNet(num_frames=VIEWS).to("cuda").eval()
    graph = synth_step_graph(unet, batch=CFG_BATCH, height=RESOLUTION, width=RESOLUTION)
    generator = torch.Generator().manual_seed(1)
    inputs = graph.random_inputs(generator=generator)
    # Realistic conditioning: c_noise for sigma 10, per-frame [cond_aug, polar, azimuth] of an orbit.
    inputs["timestep"] = torch.full((1,), math.log(10.0) / 4, device="cuda")
    azimuths = torch.linspace(0, 2 * math.pi, VIEWS + 1, device="cuda")[:-1]
    ids = torch.stack([torch.full_like(azimuths, 1e-5), torch.full_like(azimuths, math.pi / 2 - 0.1), azimuths], dim=-1)
    inputs["added_time_ids"] = ids.expand(CFG_BATCH, -1, -1).contiguous()
    with torch.no_grad():
        reference = graph.module(*inputs.values())
        torch.cuda.synchronize()
    params = sum(p.numel() for p in unet.parameters())
    RESULTS["synth_unet_parameters"] = params
    RESULTS["synth_setup_s"] = round(time.perf_counter() - start, 1)
    return graph, tuple(inputs.values()), reference


@pytest.fixture(scope="module")
def fp16_output():
    return {}


def test_stock_diffusers_eager_fp16(benchmark, step):
    """diffusers' own UNetSpatioTemporalConditionModel (SVD's config, per-clip ids), as shipped."""
    _, inputs, _ = step
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        stock = UNetSpatioTemporalConditionModel(num_frames=VIEWS).to("cuda", torch.float16).eval()
    sample, timestep, context, _ = (x.half() if x.dtype == torch.float32 and x.ndim > 1 else x for x in inputs)
    ids = torch.randn(CFG_BATCH, 3, device="cuda", dtype=torch.float16)

    def call():
        with torch.no_grad():
            stock(sample, timestep, context, ids)

    record("synth_step/stock-diffusers-eager-fp16", **gpu_time(benchmark, call))


def test_splatcast_eager_fp16(benchmark, step, fp16_output):
    graph, inputs, reference = step
    typed = graph.to(dtype=torch.float16)
    conformed = typed.conform(inputs)
    with torch.no_grad():
        out = typed.module(*conformed)
    fp16_output["eager"] = out

    def call():
        with torch.no_grad():
            typed.module(*conformed)

    record("synth_step/eager-fp16", **gpu_time(benchmark, call), relative_error_vs_fp32=relative_error(out, reference))


def test_splatcast_eager_fp16_channels_last(benchmark, step):
    """The same module with its 2D convolution weights in channels-last (NHWC) order, the layout
    Hopper's tensor-core convolutions read natively; activations follow the weights' layout.
    (The temporal Conv3d layers keep theirs: channels-last is a 4D format.)"""
    graph, inputs, reference = step
    typed = graph.to(dtype=torch.float16)
    for conv in (m for m in typed.module.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.to(memory_format=torch.channels_last)
    conformed = typed.conform(inputs)
    with torch.no_grad():
        out = typed.module(*conformed)

    def call():
        with torch.no_grad():
            typed.module(*conformed)

    record("synth_step/eager-fp16-channels-last", **gpu_time(benchmark, call), relative_error_vs_fp32=relative_error(out, reference))


def test_torch_engine_fp16_cuda_graph(benchmark, step, fp16_output):
    graph, inputs, reference = step
    start = time.perf_counter()
    engine = build_torch_engine(graph)
    build_s = time.perf_counter() - start
    out = engine(*inputs)
    fp16_output["engine"] = out
    figures = gpu_time(benchmark, lambda: engine(*inputs))
    record("synth_step/torch-fp16-cudagraph", **figures, relative_error_vs_fp32=relative_error(out, reference), build_s=round(build_s, 2), info=engine.info)


def test_torch_engine_fp8_cuda_graph(benchmark, step, fp16_output):
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no FP8 tensor cores")
    graph, inputs, reference = step
    engine = build_torch_engine(graph, fp8=True)
    out = engine(*inputs)
    figures = gpu_time(benchmark, lambda: engine(*inputs))
    record(
        "synth_step/torch-fp8-cudagraph",
        **figures,
        relative_error_vs_fp32=relative_error(out, reference),
        deviation_vs_fp16_engine=relative_error(out, fp16_output["engine"]),
        fp16_engine_vs_fp32=relative_error(fp16_output["engine"], reference),
        info=engine.info,
    )


@pytest.fixture(scope="module")
def lrt():
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LatentReconstructionTransformer().eval()
    graph = lrt_graph(model, prior_points=PRIOR_TOKENS)
    inputs = graph.random_inputs(generator=torch.Generator().manual_seed(2))
    inputs["prior_uv"] = inputs["prior_uv"].clamp(-1, 1)
    with torch.no_grad():
        reference = graph.module(*inputs.values())
    RESULTS["lrt_parameters"] = sum(p.numel() for p in model.parameters())
    return graph, tuple(inputs.values()), reference


@pytest.mark.parametrize("variant", ["eager-fp16", "torch-fp16-cudagraph", "torch-fp8-cudagraph"])
def test_lrt_forward(benchmark, lrt, variant):
    graph, inputs, reference = lrt
    if variant == "eager-fp16":
        typed = graph.to(dtype=torch.float16)
        conformed = typed.conform(inputs)

        def engine(*_):
            with torch.no_grad():
                return typed.module(*conformed)
    else:
        if variant.startswith("torch-fp8") and torch.cuda.get_device_capability() < (8, 9):
            pytest.skip("no FP8 tensor cores")
        engine = build_torch_engine(graph, fp8="fp8" in variant)
    out = engine(*inputs)
    record(f"lrt/{variant}", **gpu_time(benchmark, lambda: engine(*inputs)), relative_error_vs_fp32=relative_error(out, reference))


@pytest.mark.timeout(900)  # a package or torch.compile of the full UNet, then a cached start: minutes
def test_torch_engine_aot_build_and_cached_start(benchmark, step, tmp_path_factory):
    """The cached torch engine: an AOTInductor package, or torch.compile with cached Inductor
    artifacts where this torch refuses packages (``torch_engine.REFUSED``); named by which ran."""
    need_seconds("synth_step/torch-fp16 cached engine (aoti or compile)", 300)
    graph, inputs, reference = step
    cache = EngineCache(tmp_path_factory.mktemp("engines"))
    start = time.perf_counter()
    first = build_torch_engine(graph, cache)
    build_s = time.perf_counter() - start
    name = f"synth_step/torch-fp16-{'aoti' if first.info['aot'] else 'compile'}-cudagraph"
    record(name, build_s=round(build_s, 1), info=first.info)
    del first
    torch.cuda.empty_cache()
    torch._dynamo.reset()  # as a new process would, the second start traces again and finds the cached kernels
    start = time.perf_counter()
    engine = build_torch_engine(graph, cache)
    cached_start_s = time.perf_counter() - start
    assert not engine.info["built"]
    out = engine(*inputs)
    figures = gpu_time(benchmark, lambda: engine(*inputs))
    files = sum(f.stat().st_size for f in cache.root.glob("synth_step-torch-*/*"))
    record(
        name,
        **figures,
        relative_error_vs_fp32=relative_error(out, reference),
        build_s=round(build_s, 1),
        cached_start_s=round(cached_start_s, 1),
        cache_entry_bytes=files,
        info=engine.info,
    )


def test_stock_torch_compile(benchmark, step):
    """torch.compile (default mode) of the stock diffusers UNet: first call (compile) and steps."""
    need_seconds("synth_step/stock-diffusers-torch-compile-fp16", 260)
    _, inputs, _ = step
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        stock = UNetSpatioTemporalConditionModel(num_frames=VIEWS).to("cuda", torch.float16).eval()
    compiled = torch.compile(stock)
    sample, timestep, context, _ = (x.half() if x.dtype == torch.float32 and x.ndim > 1 else x for x in inputs)
    ids = torch.randn(CFG_BATCH, 3, device="cuda", dtype=torch.float16)

    def call():
        with torch.no_grad():
            compiled(sample, timestep, context, ids)

    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - start
    record("synth_step/stock-diffusers-torch-compile-fp16", **gpu_time(benchmark, call), compile_s=round(compile_s, 1))
