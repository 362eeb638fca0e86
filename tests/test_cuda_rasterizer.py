"""The CUDA rasterizer against the PyTorch reference on fresh random clouds and cameras.

PSNR is taken between the kernels' 8-bit output and the float reference clamped to [0, 1]
(8-bit rounding alone costs about 59 dB). Seeds are drawn anew each run and printed, so a
failure can be replayed.
"""

import dataclasses
import math
import os

import pytest
import torch

from splatcast.engine.cameras import Views, intrinsics_from_fov, invert_rigid, look_at, orbit_camera
from splatcast.engine.gaussians import GaussianCloud, random_cloud
from splatcast.kernels import reference

pytestmark = pytest.mark.gpu

cuda_rasterizer = pytest.importorskip("splatcast.kernels.cuda_rasterizer")
MIN_PSNR = {torch.float32: 45.0, torch.float16: 40.0}
STORAGES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16")]


@pytest.fixture
def generator() -> torch.Generator:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def rasterizers():
    if not cuda_rasterizer.is_available():
        pytest.skip("CUDA kernels unavailable")
    return {storage: cuda_rasterizer.CudaRasterizer(1 << 14, storage=storage) for storage in (torch.float32, torch.float16)}


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def random_intrinsics(g: torch.Generator, width: int, height: int) -> torch.Tensor:
    """Pinhole intrinsics with a random field of view, off-centre principal point and non-square pixels."""
    k = intrinsics_from_fov(uniform(g, 35, 75), width, height)
    k[0, 0] *= uniform(g, 0.9, 1.1)
    k[0, 2] += uniform(g, -0.1, 0.1) * width
    k[1, 2] += uniform(g, -0.1, 0.1) * height
    return k


def random_views(g: torch.Generator, count: int, width: int, height: int, radius: float = 2.5) -> Views:
    poses = [invert_rigid(orbit_camera(uniform(g, 0, 360), uniform(g, -40, 40), radius * uniform(g, 0.8, 1.2))) for _ in range(count)]
    return Views(torch.stack(poses), torch.stack([random_intrinsics(g, width, height) for _ in range(count)]), width, height)


def stereo_views(g: torch.Generator, width: int, height: int, ipd: float = 0.063) -> Views:
    """An eye pair: one head pose, eyes offset along its right axis, mirrored off-axis frusta."""
    head = orbit_camera(uniform(g, 0, 360), uniform(g, -20, 20), 2.0)
    k = intrinsics_from_fov(uniform(g, 60, 100), width, height)
    poses, ks = [], []
    for side in (-1, 1):
        eye = head.clone()
        eye[:3, 3] += side * ipd / 2 * head[:3, 0]
        poses.append(invert_rigid(eye))
        ke = k.clone()
        ke[0, 2] = width * (0.5 - side * 0.06)
        ks.append(ke)
    return Views(torch.stack(poses), torch.stack(ks), width, height)


def cloud_for(g: torch.Generator, n: int, **kwargs) -> GaussianCloud:
    return random_cloud(n, sh_degree=3, extent=0.6, generator=g, **kwargs).to("cuda")


def psnr(image_uint8: torch.Tensor, expected: torch.Tensor) -> float:
    mse = float(((image_uint8.float() / 255 - expected.clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def background_for(g: torch.Generator) -> tuple[float, float, float]:
    return tuple(float(x) for x in torch.rand(3, generator=g))


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("batch", ["mono", "stereo", "mixed-intrinsics"])
def test_matches_reference(rasterizers, generator, storage, batch):
    width, height = 250, 170  # neither a multiple of the tile size
    views = {
        "mono": lambda: random_views(generator, 1, width, height),
        "stereo": lambda: stereo_views(generator, width, height),
        "mixed-intrinsics": lambda: random_views(generator, 5, width, height),
    }[batch]()
    cloud = cloud_for(generator, 20_000)
    background = background_for(generator)
    image = rasterizers[storage].render(cloud, views, background)
    expected = reference.render(cloud, views, background)
    assert image.shape == (len(views), height, width, 3) and image.dtype == torch.uint8
    for v in range(len(views)):
        assert psnr(image[v], expected[v]) >= MIN_PSNR[storage], f"view {v}"


def test_fp32_storage_agrees_with_reference_to_the_8bit_level(rasterizers, generator):
    """Beyond PSNR: almost every pixel lands on the reference's own 8-bit value."""
    views = random_views(generator, 2, 200, 160)
    cloud = cloud_for(generator, 10_000)
    image = rasterizers[torch.float32].render(cloud, views)
    expected = reference.to_uint8(reference.render(cloud, views))
    difference = (image.int() - expected.int()).abs()
    assert float((difference > 1).float().mean()) < 1e-3


def test_no_gaussians_gives_the_background(rasterizers, generator):
    background = background_for(generator)
    views = random_views(generator, 3, 64, 48)
    image = rasterizers[torch.float16].render(GaussianCloud.empty(3).to("cuda"), views, background)
    expected = reference.to_uint8(torch.tensor(background)).to("cuda")
    assert torch.equal(image, expected.expand_as(image))


def test_every_gaussian_culled_gives_the_background(rasterizers, generator):
    cloud = cloud_for(generator, 5_000)
    # Looking away from the cloud, and a camera whose near plane is past it.
    away = Views(invert_rigid(look_at(torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0.0, 0.0, 6.0])))[None], intrinsics_from_fov(60, 96, 64)[None], 96, 64)
    background = background_for(generator)
    image = rasterizers[torch.float32].render(cloud, away, background)
    assert torch.equal(image, reference.to_uint8(torch.tensor(background)).to("cuda").expand_as(image))


@pytest.mark.parametrize("storage", STORAGES)
def test_camera_inside_the_cloud(rasterizers, generator, storage):
    cloud = random_cloud(20_000, sh_degree=3, extent=1.5, generator=generator).to("cuda")
    pose = look_at(torch.zeros(3), torch.tensor([uniform(generator, -1, 1), uniform(generator, -1, 1), 1.0]))
    views = Views(invert_rigid(pose)[None], random_intrinsics(generator, 160, 120)[None], 160, 120)
    image = rasterizers[storage].render(cloud, views)
    assert psnr(image[0], reference.render(cloud, views)[0]) >= MIN_PSNR[storage]


@pytest.mark.parametrize("storage", STORAGES)
def test_huge_gaussians_covering_every_tile(rasterizers, generator, storage):
    cloud = random_cloud(48, sh_degree=3, extent=0.5, scale_range=(5.0, 50.0), generator=generator).to("cuda")
    views = random_views(generator, 2, 210, 140)
    image = rasterizers[storage].render(cloud, views)
    expected = reference.render(cloud, views)
    for v in range(2):
        assert psnr(image[v], expected[v]) >= MIN_PSNR[storage]


def test_pair_count_past_2_31_is_rendered_in_passes(generator):
    """130k Gaussians covering a whole Quest-3 eye make 2.3e9 Gaussian/tile pairs: more than an
    int32 counts. Every pixel saturates within its ~14 nearest splats (opacity >= 0.5), so the
    reference can check the image against the 32 nearest Gaussians alone."""
    width, height = 2064, 2208
    n = 130_000
    cloud = random_cloud(n, sh_degree=1, extent=0.5, scale_range=(20.0, 40.0), generator=generator)
    cloud = GaussianCloud(cloud.means, cloud.quats, cloud.scales, cloud.opacities * 0.45 / 0.95 + 0.5, cloud.sh).to("cuda")
    views = Views(invert_rigid(orbit_camera(uniform(generator, 0, 360), 0, 3.0))[None], intrinsics_from_fov(90, width, height)[None], width, height)
    rasterizer = cuda_rasterizer.CudaRasterizer(n, storage=torch.float32, max_pairs=1 << 27)
    image = rasterizer.render(cloud, views)
    tiles = math.ceil(width / 16) * math.ceil(height / 16)
    assert rasterizer.passes >= n * tiles // (1 << 27) > 16
    depth = (views.world_to_camera[0, :3, :3].to("cuda") @ cloud.means.T)[2] + views.world_to_camera[0, 2, 3].to("cuda")
    nearest = cloud.subset(depth.argsort()[:32])
    assert psnr(image[0], reference.render(nearest, views)[0]) >= MIN_PSNR[torch.float32]


def test_passes_over_the_pair_sequence_match_one_pass(generator):
    cloud = cloud_for(generator, 4_000)
    views = random_views(generator, 2, 200, 150)
    background = background_for(generator)
    one_pass = cuda_rasterizer.CudaRasterizer(1 << 12, storage=torch.float32)
    chunked = cuda_rasterizer.CudaRasterizer(1 << 12, storage=torch.float32, max_pairs=1500)
    expected = one_pass.render(cloud, views, background)
    assert one_pass.passes == 1
    assert torch.equal(chunked.render(cloud, views, background), expected)
    assert chunked.passes > 3


def test_batches_past_2_24_entries_blend_without_carried_masks(generator):
    """Pair values carry each splat's warp mask only while entry indices fit in 24 bits; a
    larger batch's blending blocks test the splats themselves, with the same image per view."""
    n, count = 260_000, 65
    assert n * count > 1 << 24 > n * (count // 2 + 1)
    cloud = random_cloud(n, sh_degree=1, extent=0.6, generator=generator).to("cuda")
    views = random_views(generator, count, 64, 48)
    rasterizer = cuda_rasterizer.CudaRasterizer(n, storage=torch.float32, graphs=False)
    whole = rasterizer.render(cloud, views)
    for part in (slice(0, count // 2 + 1), slice(count // 2 + 1, count)):
        half = Views(views.world_to_camera[part], views.intrinsics[part], views.width, views.height)
        assert torch.equal(rasterizer.render(cloud, half), whole[part])


def test_24_bit_depth_keys_sort_as_the_depths_themselves(generator):
    """Where every view's depths fit 24 bits of keys (the box around the cloud's means says so), the
    image is the one 31-bit keys (the float bits of the depths) give, byte for byte."""
    cloud = cloud_for(generator, 50_000)
    views = random_views(generator, 3, 256, 192)
    background = background_for(generator)
    rasterizer = cuda_rasterizer.CudaRasterizer(1 << 16, storage=torch.float32)
    packed = cuda_rasterizer.PackedCloud.from_cloud(cloud, torch.float32, rasterizer.device)
    short = rasterizer.render(packed, views, background)
    full = rasterizer.render(dataclasses.replace(packed, half_size=(math.inf,) * 3), views, background)
    assert sorted(plan.depth_key_bits for plan in rasterizer._plans.values()) == [24, 31]
    assert torch.equal(short, full)


def test_buffers_grow_from_a_tiny_capacity(generator):
    cloud = cloud_for(generator, 30_000)
    views = random_views(generator, 2, 256, 192)
    grown = cuda_rasterizer.CudaRasterizer(capacity=1, storage=torch.float32)
    roomy = cuda_rasterizer.CudaRasterizer(capacity=1 << 16, storage=torch.float32, graphs=False)
    assert torch.equal(grown.render(cloud, views), roomy.render(cloud, views))
    # Growth between calls too: a small cloud first, then one 300 times larger.
    small = cloud_for(generator, 100)
    later = cuda_rasterizer.CudaRasterizer(capacity=1, storage=torch.float32)
    assert torch.equal(later.render(small, views), roomy.render(small, views))
    assert torch.equal(later.render(cloud, views), roomy.render(cloud, views))


def test_pair_slots_fit_the_first_frames_count(generator):
    """The first frame's pair slots are a guess (four an entry); every slot is sorted each
    frame, so the next frames make do with the first one's count and headroom, same image."""
    cloud = cloud_for(generator, 100_000, scale_range=(0.002, 0.01))
    views = random_views(generator, 1, 320, 240)
    rasterizer = cuda_rasterizer.CudaRasterizer(1 << 17, storage=torch.float32)
    first = rasterizer.render(cloud, views)
    (plan,) = rasterizer._plans.values()
    total = int(rasterizer._total_np[0])
    fitted = max(int(total * cuda_rasterizer._PAIR_HEADROOM), 1 << 16)
    assert fitted < 4 * len(cloud)  # the guess was generous
    assert plan.pair_slots == fitted
    assert torch.equal(rasterizer.render(cloud, views), first)
    assert plan.pair_slots == fitted and plan.graph is not None


def test_graph_replays_follow_new_cameras_and_backgrounds(rasterizers, generator):
    cloud = cloud_for(generator, 10_000)
    eager = cuda_rasterizer.CudaRasterizer(1 << 14, storage=torch.float16, graphs=False)
    for _ in range(4):
        views, background = random_views(generator, 2, 128, 96), background_for(generator)
        assert torch.equal(rasterizers[torch.float16].render(cloud, views, background), eager.render(cloud, views, background))


def test_i420_planes_match_a_cpu_conversion_of_the_rgb(rasterizers, generator):
    from splatcast.kernels.colour import i420_planes, rgb_to_i420

    cloud = cloud_for(generator, 20_000)
    views = random_views(generator, 3, 180, 120)
    background = background_for(generator)
    rasterizer = rasterizers[torch.float16]
    rgb = rasterizer.render(cloud, views, background).cpu()
    frames = rasterizer.render_i420(cloud, views, background, views_per_frame=[2, 1])
    for frame, group in zip(frames, (rgb[:2], rgb[2:]), strict=True):
        side_by_side = group.permute(1, 0, 2, 3).reshape(group.shape[1], -1, 3)
        assert frame.is_pinned() and frame.is_contiguous()
        for got, expected in zip(i420_planes(frame), rgb_to_i420(side_by_side), strict=True):
            assert got.shape == expected.shape
            assert int((got.int() - expected.int()).abs().max()) <= 1


def test_i420_frames_belong_to_the_caller(rasterizers, generator):
    """A call's frames are not overwritten by the next call: an encoder may still hold them
    while the next frame renders."""
    cloud, views = cloud_for(generator, 1000), random_views(generator, 1, 64, 48)
    rasterizer = rasterizers[torch.float16]
    (first,) = rasterizer.render_i420(cloud, views, (0.0, 0.0, 0.0))
    kept = first.clone()
    (second,) = rasterizer.render_i420(cloud, views, (1.0, 1.0, 1.0))
    assert torch.equal(first, kept) and not torch.equal(first, second)



def test_rgb_images_belong_to_the_caller_across_graph_replays(rasterizers, generator):
    """Each replay of a captured frame writes into the image its call allocated (its address
    travels with the inputs), never into an earlier call's."""
    cloud, views = cloud_for(generator, 1000), random_views(generator, 1, 64, 48)
    eager = cuda_rasterizer.CudaRasterizer(1 << 12, storage=torch.float16, graphs=False)
    backgrounds = [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), background_for(generator)]
    images = [rasterizers[torch.float16].render(cloud, views, b) for b in backgrounds]
    assert len({image.data_ptr() for image in images}) == len(images)
    for image, background in zip(images, backgrounds, strict=True):
        assert torch.equal(image, eager.render(cloud, views, background))

def test_i420_frames_of_a_regrown_frame_whether_the_host_spins_or_sleeps(generator):
    """A first frame that overflows its pair slots is rendered again, and the frames handed
    back are the second render's: the same as a warm rasterizer's, for a host that sleeps
    through the frame and for one that polls it throughout, and again on the next frame, which
    the host sleeps through by the first one's GPU time."""
    cloud = random_cloud(2000, sh_degree=3, extent=0.5, scale_range=(0.5, 2.0), generator=generator).to("cuda")
    views, background = random_views(generator, 1, 320, 240), background_for(generator)
    warm = cuda_rasterizer.CudaRasterizer(1 << 12, storage=torch.float32)
    warm.render_i420(cloud, views, background)
    (expected,) = warm.render_i420(cloud, views, background)
    for spin_us in (0.0, 1e6):
        rasterizer = cuda_rasterizer.CudaRasterizer(1 << 12, storage=torch.float32, spin_us=spin_us)
        (frame,) = rasterizer.render_i420(cloud, views, background)
        (plan,) = rasterizer._plans.values()
        assert plan.pair_slots > 1 << 16  # the first render overflowed and grew
        assert torch.equal(frame, expected)
        assert plan.frame_us > 0
        (frame,) = rasterizer.render_i420(cloud, views, background)
        assert torch.equal(frame, expected)


def test_unservable_batches_are_rejected_clearly(rasterizers, generator):
    rasterizer = rasterizers[torch.float16]
    with pytest.raises(ValueError, match="even"):
        rasterizer.render_i420(cloud_for(generator, 10), random_views(generator, 1, 65, 48))
    with pytest.raises(ValueError, match="split the batch"):
        rasterizer.render(cloud_for(generator, 1 << 20), random_views(generator, 2048, 32, 32))
    with pytest.raises(ValueError, match="views_per_frame"):
        rasterizer.render_i420(cloud_for(generator, 10), random_views(generator, 2, 64, 48), views_per_frame=[3])
