"""The learned reconstruction's networks on the GPU: released sizes, random weights, FP16 (issue 4).

Random weights cost what trained ones do. Figures:
- synth UNet step: one guided SV3DUNet evaluation at 21 views x 576^2 (72^2 latents), both
  classifier-free-guidance branches in one batch of 2, as every sampling step runs it;
- synthesis: a whole SV3D_p sampling of one photo, 25 Euler steps, CLIP and VAE encoding included;
- transformer forward: the latent reconstruction transformer on 4 views of 72^2 latents with
  2,048 prior tokens, giving 65,536 Gaussians;
- prior fit: Anny fitted to the segmented photo (``fit_body``, 100 steps), on the CPU and on the GPU;
- weight-free path: photo file -> Gaussians with no checkpoints (``reconstruct_photo``), the
  default that ships;
- end to end: photo -> segmentation -> prior -> 25-step synthesis -> transformer -> Gaussians
  through ``ReconstructionPipeline`` with the released sizes, each stage's seconds recorded:
  eager, and with the default GPU engine (``torch``, built into an empty cache first).
The photo is scikit-image's public-domain ``astronaut`` portrait, as for the sample avatar.
Each is timed around synchronised calls (pytest-benchmark's figures); peak GPU memory, whether
the outputs were finite (random FP16 weights need not keep them so) and the commit
(``SPLATCAST_COMMIT``) go into ``extra_info``.

    SPLATCAST_COMMIT=$(git rev-parse HEAD) python -m pytest benchmarks/test_recon_gpu.py \
        --benchmark-json=benchmarks/results/recon-<device>.json
"""

import math
import os
import time

import pytest
import torch
from PIL import Image
from skimage.data import astronaut
from splatcast.engine.images import load_image
from splatcast.engine.lrt import LatentReconstructionTransformer, LRTConfig
from splatcast.engine.pipeline import ReconstructionPipeline
from splatcast.engine.prior import fit_body
from splatcast.engine.prior.anny_body import AnnyBody
from splatcast.engine.reconstruct import reconstruct_photo
from splatcast.engine.segmentation import segment_person
from splatcast.engine.synth import SV3DSynthesizer, SynthConfig
from splatcast.export.build import EngineConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DTYPE = torch.float16


def record(benchmark, **info) -> None:
    benchmark.extra_info.update(
        info,
        commit=os.environ.get("SPLATCAST_COMMIT", "unknown"),
        dtype=str(DTYPE),
        peak_gpu_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
    )


def synchronised(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


@pytest.fixture(scope="module")
def synthesizer():
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = SV3DSynthesizer.from_config(SynthConfig(num_views=21, resolution=576, steps=25))
    return model.to("cuda", DTYPE)


@pytest.fixture(scope="module")
def photo():
    return torch.rand(1, 3, 576, 576, generator=torch.Generator().manual_seed(0), device="cpu").cuda()


def test_synth_unet_step(benchmark, synthesizer, photo):
    cond = synthesizer.condition(photo, 10.0, torch.Generator().manual_seed(1))
    latents = torch.randn(1, 21, 4, 72, 72, device="cuda", dtype=DTYPE)
    timestep = torch.tensor(0.25 * math.log(10.0), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    out = benchmark.pedantic(synchronised(lambda: synthesizer.guided_prediction(latents, timestep, cond)), rounds=10, warmup_rounds=3)
    assert out.shape == latents.shape
    params = sum(p.numel() for p in synthesizer.unet.parameters())
    record(benchmark, finite=bool(torch.isfinite(out).all()), stage="synth UNet step", views=21, resolution=576, cfg_batch=2, unet_parameters=params)


def test_synthesis_25_steps(benchmark, synthesizer, photo):
    torch.cuda.reset_peak_memory_stats()
    result = benchmark.pedantic(synchronised(lambda: synthesizer(photo, 10.0, torch.Generator().manual_seed(2))), rounds=2, warmup_rounds=1)
    assert result.latents.shape == (1, 21, 4, 72, 72)
    record(benchmark, finite=bool(torch.isfinite(result.latents).all()), stage="synthesis", views=21, resolution=576, steps=25)


@pytest.fixture(scope="module")
def lrt():
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LatentReconstructionTransformer(LRTConfig())
    return model.to("cuda", DTYPE).eval()


@pytest.fixture(scope="module")
def body():
    """Anny, built before timing: its first construction on a machine builds a data cache."""
    return AnnyBody()


def test_transformer_forward(benchmark, lrt):
    model, config = lrt, lrt.config
    g = torch.Generator(device="cuda").manual_seed(0)
    size = config.latent_size
    latents = torch.randn(1, 4, 4, size, size, device="cuda", dtype=DTYPE, generator=g)
    rays = torch.randn(1, 4, 6, size, size, device="cuda", dtype=DTYPE, generator=g)
    xyz = torch.rand(1, 2048, 3, device="cuda", dtype=DTYPE, generator=g) * 2 - 1
    uv = torch.rand(1, 2048, 2, device="cuda", dtype=DTYPE, generator=g) * 2 - 1
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        params = benchmark.pedantic(synchronised(lambda: model(latents, rays, xyz, uv)), rounds=20, warmup_rounds=3)
    assert params.shape == (1, 65_536, 14)
    record(
        benchmark,
        stage="transformer forward",
        finite=bool(torch.isfinite(params).all()),
        gaussians=config.num_gaussians,
        prior_tokens=2048,
        lrt_parameters=sum(p.numel() for p in model.parameters()),
        lrt_config=config.to_dict(),
    )


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_prior_fit(benchmark, body, device):
    segmentation = segment_person(load_image(astronaut()))
    fit = benchmark.pedantic(lambda: fit_body(segmentation, body, device=device), rounds=5, warmup_rounds=1)
    assert torch.isfinite(fit.vertices).all()
    record(benchmark, stage="prior fit", body_model="anny", steps=100, vertices=len(fit.vertices), device=device)


def test_weight_free_path(benchmark, body, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    cloud = benchmark.pedantic(lambda: reconstruct_photo(photo, body_model=body), rounds=3, warmup_rounds=1)
    assert len(cloud) > 10_000
    record(benchmark, stage="weight-free path", gaussians=len(cloud))


def time_end_to_end(benchmark, pipeline: ReconstructionPipeline, warmup_rounds: int = 1, **info) -> None:
    """Three timed photo -> Gaussians runs of ``pipeline`` on the astronaut, each stage's seconds
    of the last one recorded."""
    photo = astronaut()
    torch.cuda.reset_peak_memory_stats()
    stage_seconds = []

    def run():
        (cloud,) = pipeline(photo, seed=0, progress=False)
        stage_seconds.append(dict(pipeline.timings))
        return cloud

    cloud = benchmark.pedantic(run, rounds=3, warmup_rounds=warmup_rounds)
    assert len(cloud) == pipeline.lrt.config.num_gaussians
    record(
        benchmark,
        steps=pipeline.synthesizer.config.steps,
        gaussians=len(cloud),
        finite=bool(torch.isfinite(cloud.means).all()),
        stage_seconds={k: round(v, 3) for k, v in stage_seconds[-1].items()},
        **info,
    )


def test_end_to_end(benchmark, synthesizer, lrt, body):
    time_end_to_end(benchmark, ReconstructionPipeline(synthesizer, lrt, body_model=body), stage="end to end", engine="eager")


def test_end_to_end_torch_engine(benchmark, synthesizer, lrt, body, tmp_path_factory):
    """With the default GPU engine (``torch``): the first photo builds the UNet step's and the
    transformer's engines into an empty cache (that run's seconds recorded apart), the timed
    runs use them."""
    pipeline = ReconstructionPipeline(synthesizer, lrt, body_model=body)
    pipeline.use_engines(EngineConfig("torch"), tmp_path_factory.mktemp("engines"))
    start = time.perf_counter()
    pipeline(astronaut(), seed=0, progress=False)
    first_run_s = time.perf_counter() - start
    time_end_to_end(
        benchmark, pipeline, stage="end to end", engine="torch", warmup_rounds=0,
        first_run_with_engine_builds_s=round(first_run_s, 1),
    )
