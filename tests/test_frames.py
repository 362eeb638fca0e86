"""Stereo frames: each eye of a side-by-side frame is that eye's own render, asymmetric frusta
and interpupillary distance exactly as the client sent them."""

import json

import numpy as np
import torch

from splatcast.engine.cameras import opencv_to_opengl, orbit_camera
from splatcast.kernels import reference
from splatcast.streaming.frames import FrameRenderer
from splatcast.streaming.protocol import SizeLimits, parse_pose

from .test_cameras import off_axis_projection
from .test_streaming import figure_cloud


def eye_view(camera_to_world_cv: torch.Tensor, projection: torch.Tensor) -> dict:
    return {"matrix": opencv_to_opengl(camera_to_world_cv).T.flatten().tolist(), "projection": projection.T.flatten().tolist()}


def test_stereo_pose_with_asymmetric_frusta_renders_each_eye_as_a_mono_render_would():
    cloud = figure_cloud(2000)
    head = orbit_camera(15.0, 5.0, 2.5, (0.0, 0.7, 0.0))
    ipd = 0.064
    left, right = head.clone(), head.clone()
    left[:3, 3] -= head[:3, 0] * ipd / 2  # along the head's right axis
    right[:3, 3] += head[:3, 0] * ipd / 2
    # Headset-like: each eye's frustum is wider on its outer side.
    left_projection = off_axis_projection(1.1, 0.9, 1.0, 0.95)
    right_projection = off_axis_projection(0.9, 1.1, 1.0, 0.95)
    message = {"v": 1, "type": "pose", "seq": 1, "t": 0, "width": 96, "height": 80,
               "views": [eye_view(left, left_projection), eye_view(right, right_projection)]}
    stereo = parse_pose(json.dumps(message), SizeLimits())
    (frame,) = FrameRenderer(cloud, device="cpu").render(stereo.views())
    side_by_side = frame.frame.to_ndarray(format="rgb24")
    assert side_by_side.shape == (80, 192, 3)

    for eye, columns in ((0, slice(0, 96)), (1, slice(96, 192))):
        mono = parse_pose(json.dumps(message | {"views": [message["views"][eye]]}), SizeLimits())
        expected = reference.to_uint8(reference.render(cloud, mono.views()))[0].numpy()
        # Both went through the same I420 round trip only on one side: compare within chroma loss.
        got = side_by_side[:, columns].astype(np.int16)
        assert np.abs(got - expected).mean() < 3.0
    left_half, right_half = side_by_side[:, :96].astype(np.int16), side_by_side[:, 96:].astype(np.int16)
    assert np.abs(left_half - right_half).mean() > 1.0, "the two eyes should differ by parallax"
    torch.testing.assert_close(stereo.views().camera_centres[1] - stereo.views().camera_centres[0], head[:3, 0] * ipd, atol=1e-5, rtol=0)
