"""Pose protocol v1 parsing: what is accepted, what is refused and why."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splatcast.engine.cameras import (
    intrinsics_from_fov,
    intrinsics_from_projection,
    invert_rigid,
    matrix_from_column_major,
    opencv_to_opengl,
    opengl_to_opencv,
    orbit_camera,
    projection_from_intrinsics,
)
from splatcast.streaming.protocol import MAX_MESSAGE_BYTES, PoseError, SizeLimits, parse_pose

LIMITS = SizeLimits(max_width=1280, max_height=720)


def message(**overrides) -> dict:
    k = intrinsics_from_fov(50, 640, 480)
    view = {
        "matrix": opencv_to_opengl(orbit_camera(20, 10, 3.0)).T.flatten().tolist(),
        "projection": projection_from_intrinsics(k, 640, 480).T.flatten().tolist(),
    }
    return {"v": 1, "type": "pose", "seq": 3, "t": 100.5, "width": 640, "height": 480, "views": [view], **overrides}


def test_valid_pose_round_trips_to_the_camera_it_describes():
    pose = parse_pose(json.dumps(message()), LIMITS)
    views = pose.views()
    assert (pose.seq, pose.client_time, pose.width, pose.height) == (3, 100.5, 640, 480)
    torch.testing.assert_close(views.camera_centres[0], orbit_camera(20, 10, 3.0)[:3, 3], atol=1e-5, rtol=0)
    torch.testing.assert_close(views.intrinsics[0], intrinsics_from_fov(50, 640, 480), atol=1e-3, rtol=1e-5)


def test_views_are_what_the_engine_camera_conversions_give_for_an_off_axis_stereo_pair():
    projection = projection_from_intrinsics(intrinsics_from_fov(90, 640, 480), 640, 480)
    views = []
    for azimuth, shift in ((17.0, 0.12), (23.0, -0.08)):  # a headset's eyes: turned apart, frusta off-axis
        off_axis = projection.clone()
        off_axis[0, 2], off_axis[1, 2] = shift, -0.05
        views.append({"matrix": opencv_to_opengl(orbit_camera(azimuth, 10, 3.0)).T.flatten().tolist(), "projection": off_axis.T.flatten().tolist()})
    got = parse_pose(json.dumps(message(views=views)), LIMITS).views()
    matrices = torch.stack([matrix_from_column_major(v["matrix"]) for v in views])
    projections = torch.stack([matrix_from_column_major(v["projection"]) for v in views])
    torch.testing.assert_close(got.world_to_camera, invert_rigid(opengl_to_opencv(matrices)), atol=1e-6, rtol=0)
    torch.testing.assert_close(got.intrinsics, intrinsics_from_projection(projections, 640, 480), atol=1e-4, rtol=0)


def test_oversized_requests_are_scaled_down_keeping_aspect_and_even():
    pose = parse_pose(json.dumps(message(width=3841, height=2161)), LIMITS)
    assert pose.width <= 1280 and pose.height <= 720
    assert pose.width % 2 == 0 and pose.height % 2 == 0
    assert math.isclose(pose.width / pose.height, 3841 / 2161, rel_tol=0.01)


def test_stereo_pair_is_two_views():
    m = message()
    pose = parse_pose(json.dumps(m | {"views": m["views"] * 2}), LIMITS)
    assert pose.num_views == 2 and len(pose.views()) == 2


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ("{", "not JSON"),
        ("[1, 2]", "object"),
        (json.dumps(message(v=2)), "version"),
        (json.dumps(message(type="hello")), "type"),
        (json.dumps(message(seq=-1)), "seq"),
        (json.dumps(message(seq=1.5)), "seq"),
        (json.dumps(message(width=0)), "width"),
        (json.dumps(message(height="tall")), "height"),
        (json.dumps(message(views=[])), "views"),
        (json.dumps(message(views=[{}] * 3)), "views"),
        (json.dumps(message(views=[{"matrix": [0] * 15, "projection": [0] * 16}])), "matrix"),
        (json.dumps(message(views=[{"matrix": [2.0] * 16, "projection": [0] * 16}])), "rigid"),
        (json.dumps(message(t=float("inf"))), "t must be"),
        (json.dumps(message(width=10**310)), "width must be"),  # a JSON integer too large for a float
        (json.dumps(message(views=[{"matrix": [10**310] + [0] * 15, "projection": [0] * 16}])), "finite"),
        (json.dumps(message()).replace("100.5", "NaN"), "t must be"),
        ("x" * (MAX_MESSAGE_BYTES + 1), "exceeds"),
    ],
)
def test_bad_messages_say_what_is_wrong(payload, complaint):
    with pytest.raises(PoseError, match=complaint):
        parse_pose(payload, LIMITS)


def test_non_perspective_projection_is_refused():
    m = message()
    m["views"][0]["projection"] = torch.eye(4).flatten().tolist()
    with pytest.raises(PoseError, match="projection"):
        parse_pose(json.dumps(m), LIMITS)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=17) | st.dictionaries(st.text(max_size=10), inner, max_size=8),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values.map(json.dumps), st.binary(max_size=300), st.text(max_size=300)))
def test_any_input_either_parses_or_raises_pose_error(payload):
    try:
        parse_pose(payload, LIMITS)
    except PoseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_messages_either_parse_or_raise_pose_error(data):
    m = message()
    key = data.draw(st.sampled_from(sorted(m)))
    m[key] = data.draw(json_values)
    try:
        parse_pose(json.dumps(m), LIMITS)
    except PoseError:
        pass
