"""The render loop on real tracks and the CPU renderer: frames reach each track's sender, and a
render or encoder failure ends only the streams it hit."""

import asyncio

import pytest
from aiortc.mediastreams import MediaStreamError

from splatcast.engine.cameras import intrinsics_from_fov, orbit_camera, single_view
from splatcast.streaming.frames import FrameRenderer
from splatcast.streaming.metrics import StreamMetrics
from splatcast.streaming.render_loop import RenderLoop
from splatcast.streaming.track import AvatarTrack

from .test_streaming import figure_cloud

TIMEOUT_S = 60.0  # the first CPU render compiles the blending kernel


class BrokenRenderer(FrameRenderer):
    """A renderer whose device has gone: every call fails."""

    def render(self, views, views_per_frame=None):
        raise RuntimeError("the GPU fell off the bus")


def new_track(codec: str = "video/h264") -> AvatarTrack:
    track = AvatarTrack(single_view(orbit_camera(0.0, 0.0, 3.0), intrinsics_from_fov(40.0, 64, 48), 64, 48), fps=30)
    track.codec_mime = codec
    return track


@pytest.fixture
async def render_loop():
    loop = RenderLoop(StreamMetrics(lambda: []))
    yield loop
    loop.shutdown()


async def test_frames_keep_coming_to_every_track(render_loop):
    cloud = figure_cloud(300)
    tracks = [new_track() for _ in range(3)]
    for track in tracks:
        render_loop.add(track, FrameRenderer(cloud))
    for _ in range(3):
        packets = await asyncio.wait_for(asyncio.gather(*(t.recv() for t in tracks)), TIMEOUT_S)
        assert all(p.size > 0 for p in packets)
    assert all(t.frames_sent >= 3 for t in tracks)


@pytest.mark.parametrize(
    ("renderer_type", "codec", "error"),
    [
        (BrokenRenderer, "video/h264", "fell off the bus"),
        (FrameRenderer, "video/av1", "cannot encode video/av1"),  # negotiated, but splatcast has no encoder for it
    ],
    ids=["render", "encoder"],
)
async def test_a_failure_ends_its_stream_and_the_others_stream_on(render_loop, renderer_type, codec, error):
    cloud = figure_cloud(300)
    healthy, failing = new_track(), new_track(codec)
    render_loop.add(healthy, FrameRenderer(cloud))
    render_loop.add(failing, renderer_type(cloud))
    with pytest.raises(MediaStreamError, match=error):
        await asyncio.wait_for(failing.recv(), TIMEOUT_S)
    assert failing.readyState == "ended"
    for _ in range(2):
        assert (await asyncio.wait_for(healthy.recv(), TIMEOUT_S)).size > 0
