"""Latent reconstruction transformer and Plücker rays on tiny configs."""

import math

import pytest
import torch
from splatcast.engine.cameras import Views, invert_rigid, look_at
from splatcast.engine.lrt import LatentReconstructionTransformer, LRTConfig, plucker_rays, to_cloud
from splatcast.engine.lrt.model import merge_2x2, split_2x2

from .recon_configs import TINY_LRT


def inputs(batch=2, prior=50, seed=0, config=TINY_LRT):
    g = torch.Generator().manual_seed(seed)
    v, s = config.num_views, config.latent_size
    return (
        torch.randn(batch, v, config.latent_channels, s, s, generator=g),
        torch.randn(batch, v, 6, s, s, generator=g),
        torch.rand(batch, prior, 3, generator=g) * 2 - 1,
        torch.rand(batch, prior, 2, generator=g) * 2 - 1,
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LatentReconstructionTransformer(TINY_LRT).eval()


def test_output_is_a_valid_cloud_per_item(model):
    with torch.no_grad():
        params = model(*inputs())
    assert params.shape == (2, TINY_LRT.num_gaussians, 14)
    assert TINY_LRT.num_gaussians == 4 * 16 * 16
    assert LRTConfig().num_gaussians == 65_536
    cloud = to_cloud(params[0])
    assert len(cloud) == TINY_LRT.num_gaussians
    assert cloud.means.abs().max() <= 1
    assert ((cloud.opacities > 0) & (cloud.opacities < 1)).all()
    assert (cloud.scales > 0).all()
    torch.testing.assert_close(cloud.quats.norm(dim=1), torch.ones(len(cloud)))
    rgb = cloud.sh[:, 0] * 0.28209479177387814 + 0.5
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert cloud.sh_degree == 0 and cloud.finite_mask().all()


def test_deterministic_and_batch_independent(model):
    batch = inputs()
    with torch.no_grad():
        first, again = model(*batch), model(*batch)
        alone = model(*(x[1:] for x in batch))
    assert torch.equal(first, again)
    torch.testing.assert_close(alone[0], first[1], rtol=1e-4, atol=1e-5)


def test_every_input_reaches_every_view(model):
    """Views attend to each other and to the prior: changing view 2's latent, the rays or the
    prior's xyz changes the Gaussians of view 0 too."""
    latents, rays, xyz, uv = inputs(batch=1)
    per_view = TINY_LRT.gaussian_size**2
    with torch.no_grad():
        base = model(latents, rays, xyz, uv)[0, :per_view]
        changed_view = latents.clone()
        changed_view[:, 2] += 1
        changed_rays = rays.clone()
        changed_rays[:, 3] *= -1
        for args in ((changed_view, rays, xyz, uv), (latents, changed_rays, xyz, uv), (latents, rays, xyz + 0.5, uv)):
            assert not torch.allclose(model(*args)[0, :per_view], base, atol=1e-5)


def test_prior_tokens_sample_the_photo_latent_at_the_vertex(model):
    """A vertex projecting onto a latent pixel's centre carries exactly that pixel's latent."""
    latent = torch.randn(1, 4, 8, 8)
    rows, cols = torch.tensor([0, 3, 7]), torch.tensor([5, 0, 7])
    uv = torch.stack([(cols + 0.5) / 8 * 2 - 1, (rows + 0.5) / 8 * 2 - 1], dim=-1)[None]
    xyz = torch.rand(1, 3, 3)
    with torch.no_grad():
        tokens = model.prior_tokens(latent, xyz, uv)
        expected = model.prior_embed(torch.cat([latent[0, :, rows, cols].T, xyz[0]], dim=-1))[None]
    torch.testing.assert_close(tokens, expected)


def test_merge_takes_2x2_neighbourhoods_and_split_undoes_it():
    grid = torch.randn(2, 3, 4, 6, 5)
    merged = merge_2x2(grid)
    assert merged.shape == (2, 3, 2, 3, 20)
    i, j = 1, 2
    expected = torch.cat([grid[:, :, 2 * i, 2 * j], grid[:, :, 2 * i, 2 * j + 1], grid[:, :, 2 * i + 1, 2 * j], grid[:, :, 2 * i + 1, 2 * j + 1]], -1)
    torch.testing.assert_close(merged[:, :, i, j], expected)
    assert torch.equal(split_2x2(merged), grid)


def test_bad_sizes_are_refused(model):
    latents, rays, xyz, uv = inputs()
    with pytest.raises(ValueError, match="expected latents"):
        model(latents[:, :3], rays[:, :3], xyz, uv)
    with pytest.raises(ValueError, match="halve"):
        LRTConfig(latent_size=72, dims=(64,) * 5, depths=(1,) * 5)
    with pytest.raises(ValueError, match="head_dim"):
        LRTConfig(dims=(96, 128), depths=(1, 1), head_dim=64)


def test_plucker_rays_pass_through_the_pixel_centres():
    pose = look_at(torch.tensor([0.3, 0.5, 2.0]), torch.tensor([0.0, 0.1, 0.0]))
    intrinsics = torch.tensor([[20.0, 0, 7.0], [0, 22.0, 5.5], [0, 0, 1]])
    views = Views(invert_rigid(pose)[None], intrinsics[None], 12, 10)
    rays = plucker_rays(views)
    assert rays.shape == (1, 6, 10, 12)
    moment, direction = rays[0, :3], rays[0, 3:]
    torch.testing.assert_close(direction.norm(dim=0), torch.ones(10, 12))
    # A point along the ray of pixel (row 4, col 9): it projects to that pixel's centre, and its
    # moment x X d is the ray's (the same for every point of a line).
    point = pose[:3, 3] + 1.7 * direction[:, 4, 9]
    camera = views.world_to_camera[0] @ torch.cat([point, torch.ones(1)])
    pixel = (intrinsics @ camera[:3])[:2] / camera[2]
    torch.testing.assert_close(pixel, torch.tensor([9.5, 4.5]), rtol=0, atol=1e-4)
    torch.testing.assert_close(torch.linalg.cross(point, direction[:, 4, 9], dim=0), moment[:, 4, 9], rtol=0, atol=1e-5)
    # The pixel next to the principal point looks at the target (half a pixel off: 0.025 rad).
    forward = torch.nn.functional.normalize(torch.tensor([0.0, 0.1, 0.0]) - pose[:3, 3], dim=0)
    assert math.cos(0.026) < float(direction[:, 5, 6] @ forward)
