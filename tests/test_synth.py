"""SV3D_p synthesizer: the UNet's per-frame camera conditioning against diffusers' own UNet, the
orbit and guidance SV3D's sampler uses, the EDM schedule, and sampling on tiny configs."""

import math

import numpy as np
import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from splatcast.engine.synth import SV3DSynthesizer, SV3DUNet, SynthConfig, orbit_azimuths, orbit_polars, triangle_guidance
from splatcast.engine.synth.synthesizer import edm_euler_scheduler

from .recon_configs import TINY_SYNTH, TINY_SYNTH_CONFIG, tiny_synthesizer

UNET = dict(TINY_SYNTH["unet"], added_time_dims=(16, 16, 16))


def sgm_timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """generative-models' ``timestep_embedding``: cos then sin of t * exp(-ln(max_period) k / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def test_unet_matches_diffusers_when_every_frame_has_the_same_ids():
    """With one id vector for the whole clip and one width for every id, SV3D_p's conditioning is
    SVD's: the subclass must then give diffusers' UNetSpatioTemporalConditionModel's output. In
    float64, so that the comparison sees the arithmetic and not float32 rounding (about 1e-4 here,
    from the two paths' different matrix shapes)."""
    torch.manual_seed(0)
    ours = SV3DUNet(**UNET).eval().double()
    reference = UNetSpatioTemporalConditionModel(
        **{k: v for k, v in UNET.items() if k != "added_time_dims"}, addition_time_embed_dim=16, projection_class_embeddings_input_dim=48
    ).eval().double()
    reference.load_state_dict(ours.state_dict())
    sample = torch.randn(2, 3, 8, 8, 8, dtype=torch.float64)
    context = torch.randn(2, 1, UNET["cross_attention_dim"], dtype=torch.float64)
    ids = torch.rand(2, 3, dtype=torch.float64)
    timestep = torch.tensor(0.7, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(sample, timestep, context, ids).sample
        actual = ours(sample, timestep, context, ids[:, None].expand(2, 3, 3))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


def test_added_time_embedding_is_sv3d_p_vector():
    """SV3D_p's ``vector``: cond_aug at 256, polar and azimuth at 512 channels, sgm's sinusoids."""
    unet = SV3DUNet(**{**UNET, "added_time_dims": (256, 512, 512)})
    ids = torch.tensor([[1e-5, 1.2, 0.3], [1e-5, 1.4, 5.9]])
    embedded = torch.cat([proj(ids[:, i]) for i, proj in enumerate(unet.add_time_proj)], dim=1)
    expected = torch.cat([sgm_timestep_embedding(ids[:, 0], 256), sgm_timestep_embedding(ids[:, 1], 512), sgm_timestep_embedding(ids[:, 2], 512)], 1)
    assert unet.add_embedding.linear_1.in_features == 1280
    torch.testing.assert_close(embedded, expected, rtol=1e-5, atol=1e-5)


def test_each_frame_gets_its_own_camera():
    torch.manual_seed(0)
    unet = SV3DUNet(**UNET).eval()
    sample = torch.randn(1, 3, 8, 8, 8).expand(1, 3, 8, 8, 8).clone()
    sample[:, 1:] = sample[:, :1]  # identical frames
    context = torch.randn(1, 1, UNET["cross_attention_dim"])
    ids = torch.tensor([[[1e-5, 1.5, 0.0], [1e-5, 1.5, 2.0], [1e-5, 1.5, 4.0]]])
    with torch.no_grad():
        out = unet(sample, 0.1, context, ids)
    assert not torch.allclose(out[0, 0], out[0, 1], atol=1e-4)
    assert not torch.allclose(out[0, 1], out[0, 2], atol=1e-4)
    with pytest.raises(ValueError, match="added_time_ids"):
        unet(sample, 0.1, context, ids[:, :2])


def test_orbit_is_sv3d_reference_scripts():
    """generative-models simple_video_sample.py, version sv3d_p."""
    num_frames = 21
    azimuths_deg = np.linspace(0, 360, num_frames + 1)[1:] % 360
    expected = [np.deg2rad((a - azimuths_deg[-1]) % 360) for a in azimuths_deg]
    torch.testing.assert_close(orbit_azimuths(num_frames), torch.tensor(expected, dtype=torch.float32))
    assert orbit_azimuths(num_frames)[-1] == 0
    polars = orbit_polars(torch.tensor([10.0, -5.0]), num_frames)
    assert polars.shape == (2, num_frames)
    torch.testing.assert_close(polars[:, 0], torch.tensor([np.deg2rad(80.0), np.deg2rad(95.0)], dtype=torch.float32))


def test_triangle_guidance_rises_to_the_back_and_falls_back():
    scales = triangle_guidance(21, 1.0, 2.5)
    assert scales[0] == pytest.approx(1.0) and scales[-1] == pytest.approx(1.0)
    assert scales[10] == pytest.approx(2.5)
    steps = scales.diff()
    torch.testing.assert_close(steps[:10], torch.full((10,), 0.15))
    torch.testing.assert_close(steps[10:], torch.full((10,), -0.15))


def test_scheduler_is_edm_euler_over_sv3d_sigmas():
    scheduler = edm_euler_scheduler()
    steps = 25
    scheduler.set_timesteps(steps)
    rho, lo, hi = 7.0, 0.002, 700.0
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    karras = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), karras, rtol=1e-5, atol=1e-6)
    assert scheduler.sigmas[-1] == 0
    torch.testing.assert_close(scheduler.timesteps.double(), 0.25 * karras.log(), rtol=1e-5, atol=1e-5)
    assert float(scheduler.init_noise_sigma) == pytest.approx(math.sqrt(hi**2 + 1), rel=1e-5)


def test_built_under_a_device_context_and_moved_everything_is_there():
    """How the GPU benchmark builds the released sizes (here with the meta device standing in):
    the scheduler's tables stay on the CPU, where it needs them, and ``to`` brings every
    parameter along, also those diffusers makes with ``torch.Tensor(...)``."""
    with torch.device("meta"):
        synthesizer = SV3DSynthesizer.from_config(TINY_SYNTH_CONFIG, **TINY_SYNTH)
    synthesizer.scheduler.set_timesteps(3)
    assert synthesizer.scheduler.sigmas.device.type == "cpu"
    synthesizer.to("meta", torch.float16)
    tensors = [t for m in synthesizer.modules().values() for t in (*m.parameters(), *m.buffers())]
    assert all(t.device.type == "meta" for t in tensors)


@pytest.fixture(scope="module")
def synthesizer():
    """In float64: comparisons across batch sizes then see the wiring, not float32 rounding."""
    torch.manual_seed(0)
    return tiny_synthesizer().to(dtype=torch.float64)


def test_guidance_mixes_branches_per_frame(synthesizer):
    cfg = synthesizer.config
    images = torch.rand(1, 3, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(0))
    cond = synthesizer.condition(images, 10.0, torch.Generator().manual_seed(1))
    assert torch.all(cond.context[0] == 0) and torch.all(cond.image_latents[0] == 0)
    latents = torch.randn(1, cfg.num_views, 4, 8, 8, dtype=torch.float64)
    guided = synthesizer.guided_prediction(latents, torch.tensor(0.5), cond)
    with torch.no_grad():
        branches = [
            synthesizer.unet(torch.cat([latents, cond.image_latents[i : i + 1]], 2), 0.5, cond.context[i : i + 1], cond.added_time_ids[i : i + 1])
            for i in (0, 1)
        ]
    scale = triangle_guidance(cfg.num_views, cfg.min_guidance, cfg.max_guidance).double()[None, :, None, None, None]
    torch.testing.assert_close(guided, branches[0] + scale * (branches[1] - branches[0]), rtol=0, atol=1e-10)
    torch.testing.assert_close(guided[:, 0], branches[1][:, 0], rtol=0, atol=1e-10)  # scale 1 next to the photo


def test_sampling_shapes_determinism_and_batch_independence(synthesizer):
    cfg = synthesizer.config
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, cfg.resolution, cfg.resolution, generator=g)
    seen = []
    result = synthesizer(
        images, torch.tensor([5.0, 15.0]), [torch.Generator().manual_seed(7) for _ in range(2)], on_step=lambda *step: seen.append(step)
    )
    assert seen == [(i + 1, cfg.steps) for i in range(cfg.steps)]
    latent = cfg.resolution // 8
    assert result.latents.shape == (2, cfg.num_views, 4, latent, latent)
    assert result.input_latents.shape == (2, 4, latent, latent)
    assert result.polars.shape == (2, cfg.num_views) and result.azimuths.shape == (cfg.num_views,)
    assert torch.isfinite(result.latents).all()
    # The initial noise has std sqrt(700^2 + 1); Euler steps must bring it down to latent scale.
    assert result.latents.abs().max() < 100
    # Same image, elevation and seed alone: the same latents (each item has its own generator).
    alone = synthesizer(images[1:], 15.0, torch.Generator().manual_seed(7))
    torch.testing.assert_close(alone.latents[0], result.latents[1], rtol=0, atol=1e-8)
    torch.testing.assert_close(alone.input_latents[0], result.input_latents[1], rtol=0, atol=1e-8)
    other = synthesizer(images[1:], 15.0, torch.Generator().manual_seed(8))
    assert not torch.allclose(other.latents, alone.latents)


def test_bad_images_and_settings_are_refused(synthesizer):
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        synthesizer(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multiple of 64"):
        SynthConfig(resolution=500)
    with pytest.raises(ValueError, match="at least 2 views"):
        SynthConfig(num_views=1)
