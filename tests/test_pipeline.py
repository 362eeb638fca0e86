"""The learned reconstruction end to end on tiny random-initialised networks, and its framing."""

import math

import numpy as np
import pytest
import roma
import torch
from splatcast.engine.cameras import frame_bounds, intrinsics_from_fov, orbit_camera, single_view
from splatcast.engine.framing import FILL, frame_person
from splatcast.engine.images import ImageError
from splatcast.engine.lrt import LatentReconstructionTransformer, LRTConfig
from splatcast.engine.pipeline import ReconstructionPipeline
from splatcast.engine.prior import BodyFit
from splatcast.kernels import reference

from .recon_configs import TINY_LRT, tiny_photo, tiny_pipeline


def synthetic_fit(width=120, height=160, yaw_deg=30.0, scale=1.3) -> BodyFit:
    """A body fit with a known camera -> body similarity: turned by ``yaw_deg``, ``scale`` x larger
    in the camera than in the body frame, 3 m in front of the camera, a little to its left."""
    g = torch.Generator().manual_seed(0)
    vertices = torch.randn(500, 3, generator=g) * torch.tensor([0.2, 0.5, 0.15]) + torch.tensor([-0.3, 0.2, 3.0])
    facing = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    body_to_camera = facing @ roma.rotvec_to_rotmat(torch.tensor([0.0, math.radians(yaw_deg), 0.0])) * scale
    camera_to_body = torch.eye(4)
    camera_to_body[:3, :3] = torch.linalg.inv(body_to_camera)
    camera_to_body[:3, 3] = torch.tensor([0.1, 0.9, -0.2])
    k = torch.tensor([[150.0, 0, width / 2], [0, 150.0, height / 2], [0, 0, 1]])
    return BodyFit(vertices, torch.zeros(0, 3, dtype=torch.long), k, width, height, camera_to_body, torch.ones(500, dtype=torch.bool), "synthetic")


def test_framing_cuts_the_person_out_onto_white():
    fit = synthetic_fit()
    mask = np.zeros((160, 120), bool)
    mask[30:130, 40:90] = True
    rgb = np.full((160, 120, 3), 0.2, np.float32)
    framing = frame_person(rgb, mask, fit, 64)
    image = framing.image
    assert image.shape == (3, 64, 64) and image.min() >= 0 and image.max() <= 1
    person = image.mean(0) < 0.5
    rows, cols = np.nonzero(person.numpy())
    assert (rows.max() - rows.min() + 1) / 64 == pytest.approx(FILL, abs=2 / 64)  # the taller side fills FILL
    assert abs((rows.max() + rows.min()) / 2 - 31.5) <= 1 and abs((cols.max() + cols.min()) / 2 - 31.5) <= 1
    assert torch.all(image[:, :3, :3] == 1)


def test_photo_view_sees_the_body_where_the_photo_does():
    """Through the object-frame view 0, body vertices land on the crop's pixels they occupy in the
    photo: the world pose and the object frame's scale undo the fit's similarity exactly."""
    fit = synthetic_fit()
    mask = np.zeros((160, 120), bool)
    mask[20:140, 30:80] = True
    framing = frame_person(np.ones((160, 120, 3), np.float32), mask, fit, 64)
    crop_pixels = (fit.vertices / fit.vertices[:, 2:]) @ framing.intrinsics.T
    to_body = fit.camera_to_body
    world = fit.vertices @ to_body[:3, :3].T + to_body[:3, 3]
    views = framing.object_views(torch.tensor([math.pi / 2, math.pi]), 64)
    camera = framing.to_object(world) @ views.world_to_camera[0, :3, :3].T + views.world_to_camera[0, :3, 3]
    pixels = (camera / camera[:, 2:]) @ views.intrinsics[0].T
    torch.testing.assert_close(pixels[:, :2], crop_pixels[:, :2], rtol=0, atol=1e-3)


def test_orbit_views_circle_the_centre():
    fit = synthetic_fit()
    mask = np.zeros((160, 120), bool)
    mask[20:140, 30:80] = True
    framing = frame_person(np.ones((160, 120, 3), np.float32), mask, fit, 64)
    azimuths = torch.tensor([math.pi / 2, math.pi, 3 * math.pi / 2])
    views = framing.object_views(azimuths, 8)
    eyes = views.camera_centres
    # Same distance and height as the photo's camera, turned by the azimuths about +y.
    torch.testing.assert_close(eyes.norm(dim=1), eyes[:1].norm(dim=1).expand(4))
    torch.testing.assert_close(eyes[:, 1], eyes[:1, 1].expand(4))
    turned = torch.atan2(eyes[:, 0], eyes[:, 2]) - torch.atan2(eyes[0, 0], eyes[0, 2])
    torch.testing.assert_close(torch.remainder(turned[1:], 2 * math.pi), azimuths)
    # Each generated view looks at the orbit centre (the object frame's origin) through its image centre.
    origin = views.world_to_camera[1:, :3, 3]
    pixels = (origin / origin[:, 2:]) @ views.intrinsics[1].T
    torch.testing.assert_close(pixels[:, :2], torch.full((3, 2), 4.0), rtol=0, atol=1e-4)
    assert framing.elevation_deg == pytest.approx(math.degrees(math.asin(float(eyes[0, 1] / eyes[0].norm()))), abs=1e-4)


@pytest.fixture(scope="module")
def pipeline():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def photo():
    return tiny_photo()


def test_photo_to_a_renderable_avatar(pipeline, photo):
    clouds = pipeline([photo, photo[:, ::-1].copy()], seed=3, progress=False)
    assert len(clouds) == 2 and all(len(c) == TINY_LRT.num_gaussians for c in clouds)
    assert set(pipeline.timings) == {"segmentation", "body prior", "synthesis", "reconstruction"}
    assert all(t > 0 for t in pipeline.timings.values())
    cloud = clouds[0]
    assert cloud.finite_mask().all()
    lo, hi = cloud.bounds()
    assert float(lo[0] + hi[0]) == pytest.approx(0, abs=1e-5) and float(lo[2] + hi[2]) == pytest.approx(0, abs=1e-5)
    assert 0.05 < float((hi - lo).max()) < 5  # metres: a person's head and shoulders, not a speck or a house
    centre, radius = frame_bounds(lo, hi, 40.0)
    image = reference.render(cloud, single_view(orbit_camera(0, 0, radius, centre), intrinsics_from_fov(40.0, 48, 48), 48, 48))
    assert image.shape == (1, 48, 48, 3) and (image.sum(-1) > 0.05).float().mean() > 0.05

    # The same photo and seed alone: the same avatar (each photo has its own noise).
    alone = pipeline([photo], seed=3, progress=False)[0]
    torch.testing.assert_close(alone.means, cloud.means, rtol=0, atol=1e-4)
    torch.testing.assert_close(alone.sh, cloud.sh, rtol=0, atol=1e-4)


def test_bad_photos_and_mismatched_networks_are_refused(pipeline):
    with pytest.raises(ImageError):
        pipeline(b"not an image", progress=False)
    with pytest.raises(ValueError, match="reads 3 views"):
        ReconstructionPipeline(pipeline.synthesizer, LatentReconstructionTransformer(LRTConfig(**{**TINY_LRT.to_dict(), "num_views": 3})))
    with pytest.raises(ValueError, match="latents"):
        ReconstructionPipeline(pipeline.synthesizer, LatentReconstructionTransformer(LRTConfig(**{**TINY_LRT.to_dict(), "latent_size": 16})))
