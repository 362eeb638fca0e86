"""The learned pipeline's networks run through engines (CPU: the eager engine, and the refusals
of engines that cannot run here). The torch engine's run of the pipeline is in test_export_gpu.py."""

import importlib.util

import pytest
import torch
from splatcast.export import EngineConfig, EngineUnavailableError, MissingDependencyError

from .recon_configs import TINY_SYNTH_CONFIG, tiny_photo, tiny_pipeline


@pytest.fixture(scope="module")
def photo():
    return tiny_photo()


def assert_same_clouds(clouds, expected):
    assert len(clouds) == len(expected)
    for cloud, reference in zip(clouds, expected):
        for name in ("means", "quats", "scales", "opacities", "sh"):
            assert torch.equal(getattr(cloud, name), getattr(reference, name)), name


def test_eager_engines_run_the_networks_and_give_the_same_gaussians(photo):
    pipeline = tiny_pipeline()
    without = pipeline([photo], seed=1, progress=False)
    pipeline.use_engines(EngineConfig(name="eager"))
    assert_same_clouds(pipeline([photo], seed=1, progress=False), without)

    (step,) = pipeline.synthesizer.denoiser.engines.values()
    (lrt,) = pipeline.reconstructor.engines.values()
    assert step.info["engine"] == lrt.info["engine"] == "eager"
    assert step.graph.name == "synth_step" and lrt.graph.name == "lrt"
    assert (step.calls, lrt.calls) == (TINY_SYNTH_CONFIG.steps, 1), "every UNet step and the transformer went through the engines"


def test_another_photo_count_gets_its_own_engine(photo):
    """Static engines fit one batch size: two photos load a second pair, shaped for them."""
    pipeline = tiny_pipeline()
    pipeline.use_engines(EngineConfig(name="eager"))
    pipeline([photo], seed=1, progress=False)
    pipeline([photo, photo[:, ::-1].copy()], seed=1, progress=False)
    steps = {shapes[0][0]: engine for shapes, engine in pipeline.synthesizer.denoiser.engines.items()}
    lrts = {shapes[0][0]: engine for shapes, engine in pipeline.reconstructor.engines.items()}
    assert sorted(steps) == [2, 4] and sorted(lrts) == [1, 2]  # clips (2 per photo) and photos
    assert all(engine.calls == TINY_SYNTH_CONFIG.steps for engine in steps.values())
    assert steps[4].graph.inputs["sample"].shape[0] == 4 and lrts[2].graph.inputs["latents"].shape[0] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_torch_engine_on_the_cpu_is_refused_at_once():
    pipeline = tiny_pipeline()
    with pytest.raises(EngineUnavailableError, match="need a CUDA GPU; use the 'eager' engine"):
        pipeline.use_engines(EngineConfig(name="torch"))
    assert pipeline.synthesizer.denoiser is None and pipeline.reconstructor is None


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_without_the_extra_is_refused_at_once(tmp_path):
    pipeline = tiny_pipeline()
    with pytest.raises(MissingDependencyError, match=r"pip install 'splatcast\[tensorrt\]'"):
        pipeline.use_engines(EngineConfig(name="tensorrt"), tmp_path)
    assert pipeline.synthesizer.denoiser is None and not any(tmp_path.iterdir())
