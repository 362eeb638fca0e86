"""Weight-free reconstruction: segmentation, body prior fit, and the Gaussian avatar it makes.

Ground truth comes from synthetic photos whose silhouette is known exactly: a drawn figure for
GrabCut, and the Anny body itself projected through a known camera for the prior fit.
"""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch

from splatcast.engine.cameras import Views, frame_bounds, intrinsics_from_fov, invert_rigid, orbit_camera
from splatcast.engine.prior import AnnyBody, BodyModelError, SmplBody, default_intrinsics, fit_body
from splatcast.engine.segmentation import PersonNotFoundError, Segmentation, detect_face, segment_person
from splatcast.engine.weightfree import reconstruct
from splatcast.kernels import reference

SIZE = 160  # synthetic photos are SIZE x SIZE


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def drawn_figure() -> np.ndarray:
    """A head, neck, torso and arms (bool mask) in the middle of the frame."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, (80, 34), 15, 1, -1)
    cv2.rectangle(mask, (74, 45), (86, 58), 1, -1)
    cv2.ellipse(mask, (80, 110), (32, 56), 0, 0, 360, 1, -1)
    cv2.rectangle(mask, (42, 62), (52, 140), 1, -1)
    cv2.rectangle(mask, (108, 62), (118, 140), 1, -1)
    return mask.astype(bool)


def photo_of(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """Float RGB: a textured blue-grey background, the person in green (photo left) and red (right)."""
    rng = np.random.default_rng(seed)
    background = np.array([0.35, 0.4, 0.5]) + rng.normal(0, 0.04, mask.shape + (3,))
    person = np.where((np.arange(mask.shape[1]) < mask.shape[1] / 2)[None, :, None], [0.1, 0.7, 0.2], [0.85, 0.15, 0.1])
    person = person + rng.normal(0, 0.03, mask.shape + (3,))
    return np.clip(np.where(mask[..., None], person, background), 0, 1).astype(np.float32)


def project_silhouette(vertices: torch.Tensor, faces: torch.Tensor, intrinsics: torch.Tensor, size: int) -> np.ndarray:
    """Exact silhouette of a mesh: every projected triangle filled (the test's own rasteriser)."""
    pixels = vertices[:, :2] / vertices[:, 2:] * intrinsics.diagonal()[:2] + intrinsics[:2, 2]
    triangles = (pixels[faces].numpy() * 16).round().astype(np.int32)  # 4 bits of sub-pixel precision
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, list(triangles), 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


# --- segmentation ---------------------------------------------------------------------------


def test_grabcut_finds_a_drawn_figure():
    truth = drawn_figure()
    segmentation = segment_person(photo_of(truth))
    assert segmentation.method == "grabcut"
    assert segmentation.face_box is None
    assert iou(segmentation.mask, truth) > 0.9


def test_alpha_channel_is_the_mask():
    truth = drawn_figure()
    rgba = np.dstack([photo_of(truth), truth.astype(np.float32)])
    segmentation = segment_person(rgba)
    assert segmentation.method == "alpha"
    np.testing.assert_array_equal(segmentation.mask, truth)


def test_opaque_alpha_falls_back_to_grabcut():
    truth = drawn_figure()
    rgba = np.dstack([photo_of(truth), np.ones(truth.shape, np.float32)])
    segmentation = segment_person(rgba)
    assert segmentation.method == "grabcut" and iou(segmentation.mask, truth) > 0.9


@pytest.mark.parametrize("case", ["flat", "transparent", "speck"])
def test_no_person_found(case):
    if case == "flat":
        image = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    else:
        alpha = np.zeros((SIZE, SIZE), np.float32)
        if case == "speck":
            alpha[80:82, 80:82] = 1
        image = np.dstack([photo_of(drawn_figure()), alpha])
    with pytest.raises(PersonNotFoundError, match="no person found"):
        segment_person(image)


def test_face_cascade_finds_the_astronaut():
    from skimage.data import astronaut

    x, y, w, h = detect_face(astronaut() / 255.0)
    # Eileen Collins' face spans about x 175..275, y 70..170 in the 512x512 photo.
    assert 150 < x + w / 2 < 250 and 90 < y + h / 2 < 150 and 70 < w < 150


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_coarse_to_fine_grabcut_matches_a_single_scale_run(name):
    """GrabCut's rounds run on a quarter of the pixels, yet the mask is the one all five rounds at
    the working size give (the astronaut's helmet, which k-means over the coarse pixels alone
    drops, included)."""
    import skimage.data

    from splatcast.engine.segmentation import WORK_SIDE, _grabcut, _grabcut_seeds

    photo = getattr(skimage.data, name)()
    rgb = photo / 255.0
    face_box = detect_face(rgb)
    height, width = photo.shape[:2]
    scale = WORK_SIDE / max(height, width)
    work = cv2.resize(photo, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    seeds = _grabcut_seeds(*work.shape[:2], None if face_box is None else tuple(v * scale for v in face_box))
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(work, cv2.COLOR_RGB2BGR), seeds, None, np.zeros((1, 65)), np.zeros((1, 65)), 5, cv2.GC_INIT_WITH_MASK)
    single_scale = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    reference = cv2.resize(single_scale.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    assert iou(_grabcut(rgb, face_box, 5), reference) >= 0.97


# --- body prior -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anny():
    return AnnyBody()


def test_closed_form_arms_match_the_model(anny, smpl_folder):
    """``vertices`` (cos/sin basis) against the body model's own evaluation at random arm angles."""
    generator = torch.Generator().manual_seed(0)
    for body in (anny, SmplBody(smpl_folder[0], model_type="smpl")):
        for _ in range(3):
            angles = (torch.rand(2, generator=generator) * 2 - 0.5).double()
            torch.testing.assert_close(body.vertices(angles).double(), body.posed(angles), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def anny_photo(anny):
    """The Anny body, arms down, 3.2 m in front of a 40-degree camera: its exact silhouette and depth."""
    intrinsics = default_intrinsics(SIZE, SIZE)
    body = anny.vertices(torch.tensor(anny.arms_down))
    camera = body * torch.tensor([1.0, -1.0, -1.0]) + torch.tensor([0.03, 0.95, 3.2])
    mask = project_silhouette(camera, anny.faces, intrinsics, SIZE)
    return mask, intrinsics, camera


@pytest.fixture(scope="module")
def anny_fit(anny, anny_photo):
    mask, intrinsics, _ = anny_photo
    return fit_body(Segmentation(mask, None, "alpha"), anny, intrinsics, steps=80)


def test_fit_matches_the_silhouette_and_depth(anny_fit, anny_photo):
    mask, intrinsics, truth = anny_photo
    fitted = project_silhouette(anny_fit.vertices, anny_fit.faces, intrinsics, SIZE)
    assert iou(fitted, mask) > 0.85
    depth_error = abs(float(anny_fit.vertices[:, 2].mean() / truth[:, 2].mean()) - 1)
    assert depth_error < 0.1
    assert anny_fit.visible.float().mean() > 0.95  # the whole body is in frame


def test_camera_to_body_recovers_the_body_frame(anny_fit):
    body = anny_fit.vertices @ anny_fit.camera_to_body[:3, :3].T + anny_fit.camera_to_body[:3, 3]
    lo, hi = body.amin(0), body.amax(0)
    assert abs(float(lo[1])) < 0.05  # soles near y = 0
    assert 1.4 < float(hi[1]) < 2.0  # standing up, about Anny's height
    assert float(hi[0] - lo[0]) < 0.8  # arms down, not spread


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_on_the_gpu_is_the_cpu_fit(anny, anny_photo, anny_fit):
    """The same optimisation on a GPU: the same body within 2 mm a vertex (float32 rounding
    compounds over the steps), and the fit handed back on the CPU."""
    mask, intrinsics, _ = anny_photo
    on_gpu = fit_body(Segmentation(mask, None, "alpha"), anny, intrinsics, steps=80, device="cuda")
    assert on_gpu.vertices.device.type == "cpu"
    assert float((on_gpu.vertices - anny_fit.vertices).norm(dim=1).max()) < 2e-3
    torch.testing.assert_close(on_gpu.camera_to_body, anny_fit.camera_to_body, atol=2e-3, rtol=0)


def test_smpl_missing_file_names_it(tmp_path):
    with pytest.raises(BodyModelError, match=r"smplx[/\\]SMPLX_NEUTRAL\.npz"):
        SmplBody(tmp_path, model_type="smplx")
    broken = tmp_path / "SMPL_NEUTRAL.pkl"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(BodyModelError, match="not a usable SMPL model"):
        SmplBody(broken, model_type="smpl")


# SMPL's kinematic tree and a T-pose skeleton (metres, y up, left on +x) for a synthetic model file.
_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
_JOINTS = [
    (0, 0.95, 0), (0.09, 0.87, 0), (-0.09, 0.87, 0), (0, 1.05, 0), (0.1, 0.5, 0), (-0.1, 0.5, 0),
    (0, 1.18, 0), (0.1, 0.1, 0), (-0.1, 0.1, 0), (0, 1.25, 0), (0.1, 0.03, 0.1), (-0.1, 0.03, 0.1),
    (0, 1.45, 0), (0.08, 1.38, 0), (-0.08, 1.38, 0), (0, 1.6, 0), (0.18, 1.4, 0), (-0.18, 1.4, 0),
    (0.45, 1.4, 0), (-0.45, 1.4, 0), (0.7, 1.4, 0), (-0.7, 1.4, 0), (0.78, 1.4, 0), (-0.78, 1.4, 0),
]  # fmt: skip


@pytest.fixture(scope="module")
def smpl_folder(tmp_path_factory):
    """A synthetic SMPL file in the official layout: 6890 vertices in blobs around the 24 joints,
    each rigidly skinned to its joint; the first vertex of each blob sits on the joint and the
    joint regressor picks it."""
    rng = np.random.default_rng(0)
    per_joint = np.full(24, 6890 // 24)
    per_joint[: 6890 % 24] += 1
    joint_of = np.repeat(np.arange(24), per_joint)
    joints = np.array(_JOINTS, np.float64)
    offsets = rng.normal(0, 0.04, (6890, 3))
    firsts = np.concatenate([[0], np.cumsum(per_joint)[:-1]])
    offsets[firsts] = 0
    v_template = joints[joint_of] + offsets
    regressor = np.zeros((24, 6890))
    regressor[np.arange(24), firsts] = 1
    faces = np.stack([np.arange(0, 6888, 3), np.arange(1, 6889, 3), np.arange(2, 6890, 3)], 1)
    model = {
        "v_template": v_template,
        "shapedirs": np.zeros((6890, 3, 10)),
        "posedirs": np.zeros((6890, 3, 207)),
        "J_regressor": regressor,
        "weights": np.eye(24)[joint_of],
        "kintree_table": np.stack([np.array(_PARENTS) % 2**32, np.arange(24)]).astype(np.int64),
        "f": faces.astype(np.int64),
    }
    folder = tmp_path_factory.mktemp("models")
    (folder / "smpl").mkdir()
    with open(folder / "smpl" / "SMPL_NEUTRAL.pkl", "wb") as f:
        pickle.dump(model, f)
    return folder, joint_of


def test_smpl_from_a_model_file(smpl_folder):
    folder, joint_of = smpl_folder
    body = SmplBody(folder, model_type="smpl")
    rest = body.vertices(torch.zeros(2))
    assert rest.shape == (6890, 3)
    assert abs(float(rest[:, 1].min())) < 1e-6  # soles on y = 0
    np.testing.assert_array_equal(body.head_vertices.numpy(), np.nonzero(joint_of == 15)[0])
    down = body.vertices(torch.tensor(body.arms_down))
    left_hand, right_hand = joint_of == 22, joint_of == 23
    assert float(down[left_hand, 1].mean()) < float(rest[left_hand, 1].mean()) - 0.3
    assert float(down[right_hand, 1].mean()) < float(rest[right_hand, 1].mean()) - 0.3
    np.testing.assert_allclose(down[left_hand, 0].mean(), -down[right_hand, 0].mean(), atol=0.02)  # mirrored
    legs = np.isin(joint_of, [4, 5, 7, 8])
    np.testing.assert_allclose(down[legs], rest[legs], atol=1e-5)  # only the arms move


def test_fit_body_accepts_smpl(smpl_folder):
    body = SmplBody(smpl_folder[0], model_type="smpl")
    fit = fit_body(Segmentation(drawn_figure(), None, "alpha"), body, steps=5)
    assert fit.model == "smpl" and fit.vertices.shape == (6890, 3) and torch.isfinite(fit.vertices).all()


# --- the weight-free avatar -----------------------------------------------------------------


@pytest.fixture(scope="module")
def avatar(anny_photo, anny_fit):
    mask = anny_photo[0]
    image = np.dstack([photo_of(mask), mask.astype(np.float32)])
    return reconstruct(image, Segmentation(mask, None, "alpha"), anny_fit, num_gaussians=6000)


def test_avatar_is_a_valid_asset_within_budget(avatar):
    assert 0.8 * 6000 <= len(avatar) <= 6000
    assert avatar.sh_degree == 0
    assert bool(avatar.finite_mask().all())
    torch.testing.assert_close(avatar.quats.norm(dim=1), torch.ones(len(avatar)), atol=1e-5, rtol=0)
    assert bool((avatar.scales > 0).all()) and bool(((avatar.opacities > 0) & (avatar.opacities < 1)).all())


def test_avatar_stands_in_the_world_frame(avatar):
    lo, hi = avatar.bounds()
    assert abs(float(lo[0] + hi[0])) < 1e-4 and abs(float(lo[2] + hi[2])) < 1e-4  # centred on x = z = 0
    assert abs(float(lo[1])) < 0.06 and 1.4 < float(hi[1]) < 2.0  # on its feet, person-sized
    assert 0.08 < float(hi[2] - lo[2]) < 0.6  # has depth, front and back


def render_coverage(cloud, azimuth: float) -> tuple[np.ndarray, np.ndarray]:
    """RGB over black, and which pixels the avatar covers (same render over black and white)."""
    width = height = 96
    centre, radius = frame_bounds(*cloud.bounds(), 30.0)
    pose = orbit_camera(azimuth, 0.0, radius, centre)[None]
    views = Views(invert_rigid(pose), intrinsics_from_fov(30.0, width, height)[None], width, height)
    over_black = reference.render(cloud, views, (0.0, 0.0, 0.0))[0].numpy()
    over_white = reference.render(cloud, views, (1.0, 1.0, 1.0))[0].numpy()
    return over_black, np.abs(over_white - over_black).max(-1) < 0.1


def test_avatar_renders_as_the_photographed_person(avatar):
    front, covered = render_coverage(avatar, 0.0)
    assert covered.mean() > 0.1
    rows = np.nonzero(covered.any(1))[0]
    widths = covered.sum(1)
    assert widths[rows[0] + 2] < 0.5 * widths[(rows[0] + rows[-1]) // 2]  # head up: narrow top
    # Photo left (green) stays on the left of a view from +z; photo right (red) on the right.
    left, right = covered.copy(), covered.copy()
    left[:, 48:] = right[:, :48] = False
    assert front[left][:, 1].mean() > front[left][:, 0].mean() + 0.2
    assert front[right][:, 0].mean() > front[right][:, 1].mean() + 0.2
    _, covered_side = render_coverage(avatar, 90.0)
    assert covered_side.mean() > 0.3 * covered.mean()  # a body, not a cardboard cut-out
    _, covered_back = render_coverage(avatar, 180.0)
    assert iou(covered_back, covered[:, ::-1]) > 0.8  # closed at the back, mirror of the front


def test_budget_is_configurable(anny_photo, anny_fit):
    mask = anny_photo[0]
    image = np.dstack([photo_of(mask), mask.astype(np.float32)])
    small = reconstruct(image, Segmentation(mask, None, "alpha"), anny_fit, num_gaussians=1500)
    assert 0.8 * 1500 <= len(small) <= 1500
    with pytest.raises(ValueError, match="at least 100"):
        reconstruct(image, Segmentation(mask, None, "alpha"), anny_fit, num_gaussians=10)


def test_bundled_sample_avatar_is_where_its_docs_say():
    """The shipped bust: its Gaussian budget (sized for the CPU server), SH degree 0, centred on
    x = z = 0, about 0.9-1.7 m up."""
    from splatcast.config import sample_avatar_path
    from splatcast.engine.formats import load_asset
    from splatcast.engine.sample import SAMPLE_NUM_GAUSSIANS

    cloud = load_asset(sample_avatar_path())
    assert 0.9 * SAMPLE_NUM_GAUSSIANS <= len(cloud) <= SAMPLE_NUM_GAUSSIANS and cloud.sh_degree == 0
    lo, hi = cloud.bounds()
    assert abs(float(lo[0] + hi[0])) < 1e-4 and abs(float(lo[2] + hi[2])) < 1e-4
    assert 0.7 < float(lo[1]) < 1.1 and 1.5 < float(hi[1]) < 1.9
