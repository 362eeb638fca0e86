"""The pure-PyTorch renderer against hand-computed cases and a brute-force per-pixel oracle."""

import math

import pytest
import torch

from splatcast.engine.cameras import Views, intrinsics_from_fov, invert_rigid, look_at, orbit_camera, single_view
from splatcast.engine.gaussians import GaussianCloud, random_cloud, rgb_to_sh0
from splatcast.kernels import reference
from splatcast.kernels.sh import SH_C1, eval_sh_colours


def one_gaussian(position, sigma, opacity, rgb) -> GaussianCloud:
    return GaussianCloud(
        torch.tensor([position], dtype=torch.float32),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        torch.full((1, 3), float(sigma)),
        torch.tensor([float(opacity)]),
        rgb_to_sh0(torch.tensor([rgb], dtype=torch.float32))[:, None],
    )


def brute_force(cloud: GaussianCloud, views: Views, background) -> torch.Tensor:
    """Every pixel against every Gaussian in depth order, straight from the 3DGS loop (float64)."""
    proj = reference.project(cloud.to(dtype=torch.float64), Views(views.world_to_camera.double(), views.intrinsics.double(), views.width, views.height))
    out = torch.empty(len(views), views.height, views.width, 3, dtype=torch.float64)
    bg = torch.tensor(background, dtype=torch.float64)
    for v in range(len(views)):
        order = [i for i in proj.depths[v].argsort().tolist() if proj.visible[v, i]]
        ys, xs = torch.meshgrid(torch.arange(views.height) + 0.5, torch.arange(views.width) + 0.5, indexing="ij")
        colour = torch.zeros(views.height, views.width, 3, dtype=torch.float64)
        t = torch.ones(views.height, views.width, dtype=torch.float64)
        done = torch.zeros(views.height, views.width, dtype=torch.bool)
        for i in order:
            dx, dy = xs - proj.means2d[v, i, 0], ys - proj.means2d[v, i, 1]
            a, b, c = proj.conics[v, i]
            power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
            alpha = (proj.opacities[i] * power.exp()).clamp(max=0.99)
            use = (power <= 0) & (alpha >= 1 / 255) & ~done
            test_t = t * (1 - alpha)
            stop = use & (test_t < 1e-4)
            done |= stop
            use &= ~stop
            colour += torch.where(use[..., None], (alpha * t)[..., None] * proj.colours[v, i], 0.0)
            t = torch.where(use, test_t, t)
        out[v] = colour + t[..., None] * bg
    return out


def head_on_view(width=64, height=48, distance=3.0):
    return single_view(look_at(torch.tensor([0.0, 0.0, distance]), torch.zeros(3)), intrinsics_from_fov(60, width, height), width, height)


def test_single_gaussian_head_on_lands_where_and_with_the_value_it_should():
    sigma, opacity, distance = 0.05, 0.8, 3.0
    views = head_on_view(distance=distance)
    image = reference.render(one_gaussian((0, 0, 0), sigma, opacity, (1.0, 0.5, 0.25)), views, background=(0, 0, 1))[0]
    # The centre projects to (32, 24): the four pixels around it are equally lit and brightest.
    red = image[..., 0]
    assert red.argmax() // 64 in (23, 24) and red.argmax() % 64 in (31, 32)
    torch.testing.assert_close(red[23:25, 31:33], red[23, 31].expand(2, 2))
    focal = views.intrinsics[0, 1, 1].item()
    variance = (focal * sigma / distance) ** 2 + reference.LOW_PASS
    alpha = opacity * math.exp(-0.5 * (0.5**2 + 0.5**2) / variance)
    torch.testing.assert_close(image[23, 31], torch.tensor([alpha, 0.5 * alpha, 0.25 * alpha + (1 - alpha)]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(image[0, 0], torch.tensor([0.0, 0.0, 1.0]))


def test_nearer_of_two_overlapping_gaussians_wins_from_either_side():
    red_near_camera = one_gaussian((0, 0, 0.2), 0.3, 0.99, (1, 0, 0))
    blue_behind = one_gaussian((0, 0, -0.2), 0.3, 0.99, (0, 0, 1))
    both = GaussianCloud(*(torch.cat([getattr(red_near_camera, f), getattr(blue_behind, f)]) for f in ("means", "quats", "scales", "opacities", "sh")))
    front = reference.render(both, head_on_view())[0, 24, 32]
    back_view = single_view(look_at(torch.tensor([0.0, 0.0, -3.0]), torch.zeros(3)), intrinsics_from_fov(60, 64, 48), 64, 48)
    back = reference.render(both, back_view)[0, 24, 32]
    assert front[0] > 0.95 and front[2] < 0.05
    assert back[2] > 0.95 and back[0] < 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_oracle_on_random_clouds(seed):
    g = torch.Generator().manual_seed(seed + 100 * int(torch.randint(0, 1000, ())))  # fresh inputs each run
    cloud = random_cloud(60, sh_degree=3, extent=0.4, scale_range=(0.01, 0.15), generator=g)
    views = Views.concat(
        [
            single_view(orbit_camera(float(torch.rand(1, generator=g) * 360), 10, 2.0), intrinsics_from_fov(50, 40, 30), 40, 30),
            single_view(orbit_camera(float(torch.rand(1, generator=g) * 360), -20, 1.5), intrinsics_from_fov(70, 40, 30), 40, 30),
        ]
    )
    fast = reference.render(cloud, views, background=(0.2, 0.3, 0.4))
    oracle = brute_force(cloud, views, (0.2, 0.3, 0.4))
    torch.testing.assert_close(fast.double(), oracle, atol=2e-4, rtol=0)


def test_early_termination_stops_behind_an_opaque_wall():
    g = torch.Generator().manual_seed(5)
    n = 40
    cloud = GaussianCloud(
        torch.stack([torch.zeros(n), torch.zeros(n), torch.linspace(0.5, -0.5, n)], 1),
        torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        torch.full((n, 3), 0.5),
        torch.full((n,), 0.99),
        rgb_to_sh0(torch.rand(n, 3, generator=g))[:, None],
    )
    views = head_on_view(32, 24)
    torch.testing.assert_close(reference.render(cloud, views).double(), brute_force(cloud, views, (0, 0, 0)), atol=1e-5, rtol=0)
    # At the centre each alpha is ~0.98: the third Gaussian would take T under 1e-4, so only the
    # two nearest count there, and the other 38 change nothing.
    full = reference.render(cloud, views)[0, 12, 16]
    torch.testing.assert_close(full, reference.render(cloud.subset(slice(0, 2)), views)[0, 12, 16])
    assert (full - reference.render(cloud.subset(slice(0, 3)), views)[0, 12, 16]).abs().max() == 0
    assert (full - reference.render(cloud.subset(slice(0, 1)), views)[0, 12, 16]).abs().max() > 1e-3


def test_stereo_batch_equals_two_mono_renders_and_tile_size_changes_nothing():
    g = torch.Generator().manual_seed(int(torch.randint(0, 10_000, ())))
    cloud = random_cloud(400, sh_degree=2, extent=0.5, generator=g)
    k = intrinsics_from_fov(60, 48, 40)
    left, right = orbit_camera(-2, 0, 2.0), orbit_camera(2, 0, 2.0)
    pair = Views(torch.stack([invert_rigid(left), invert_rigid(right)]), torch.stack([k, k]), 48, 40)
    stereo = reference.render(cloud, pair, tile_size=16)
    torch.testing.assert_close(stereo[0], reference.render(cloud, single_view(left, k, 48, 40))[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(stereo[1], reference.render(cloud, single_view(right, k, 48, 40))[0], atol=1e-5, rtol=0)
    assert (stereo[0] - stereo[1]).abs().max() > 0.01


def test_empty_cloud_and_everything_behind_the_camera_give_background():
    views = head_on_view(16, 8)
    empty = reference.render(GaussianCloud.empty(), views, background=(0.1, 0.2, 0.3))
    behind = reference.render(one_gaussian((0, 0, 5), 0.1, 0.9, (1, 1, 1)), views, background=(0.1, 0.2, 0.3))
    for image in (empty, behind):
        torch.testing.assert_close(image, torch.tensor([0.1, 0.2, 0.3]).expand(1, 8, 16, 3))


def test_sh_degree_one_follows_the_view_direction():
    directions = torch.tensor([[[0.0, 0.0, 1.0]], [[0.0, 0.0, -1.0]]])
    sh = torch.zeros(1, 4, 3)
    sh[0, 2] = 0.4  # the z band
    colours = eval_sh_colours(sh, directions)
    torch.testing.assert_close(colours[:, 0, 0], torch.tensor([0.5 + SH_C1 * 0.4, 0.5 - SH_C1 * 0.4]))


def test_fused_blend_matches_eager_definition():
    g = torch.Generator().manual_seed(int(torch.randint(0, 10_000, ())))
    a, p, k = 5, 64, 24
    conics = torch.rand(a, k, 3, generator=g)
    conics[..., 1] = (conics[..., 1] - 0.5) * 0.2
    args = (
        torch.randn(a, k, generator=g) * 6,
        torch.randn(a, k, generator=g) * 6,
        torch.rand(p, generator=g) * 8,
        torch.rand(p, generator=g) * 8,
        conics,
        torch.rand(a, k, generator=g),
        torch.rand(a, k, 3, generator=g),
        torch.rand(a, k, generator=g) > 0.2,
        torch.rand(a, p, generator=g) * 0.5 + 0.5,
        torch.rand(a, p, generator=g) > 0.9,
    )
    expected = reference.blend_slice(*args)
    fused = reference._Blender()
    for got, want in zip(fused(*args), expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
