"""The RGB -> I420 reference against libswscale (through PyAV), which the CPU path encodes from."""

import av
import numpy as np
import pytest
import torch

from splatcast.kernels.colour import i420_planes, rgb_to_i420


def swscale_i420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    packed = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    return tuple(plane.numpy() for plane in i420_planes(torch.from_numpy(packed)))


@pytest.mark.parametrize("size", [(8, 16), (30, 42), (120, 160), (720, 1280)])
@pytest.mark.parametrize("content", ["noise", "smooth"])
def test_within_one_level_of_swscale(size, content):
    height, width = size
    g = torch.Generator().manual_seed(height * 7919 + width)
    if content == "noise":
        rgb = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    else:
        coarse = torch.rand(1, 3, height // 4 + 2, width // 4 + 2, generator=g)
        smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
        rgb = (smooth[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8)
    ours = rgb_to_i420(rgb)
    for plane, theirs in zip(ours, swscale_i420(rgb.numpy()), strict=True):
        assert plane.shape == theirs.shape
        assert int((plane.int() - torch.from_numpy(theirs).int()).abs().max()) <= 1


def test_batches_convert_view_by_view():
    rgb = torch.randint(0, 256, (3, 16, 24, 3), dtype=torch.uint8)
    batched = rgb_to_i420(rgb)
    for v in range(3):
        for plane, single in zip(batched, rgb_to_i420(rgb[v]), strict=True):
            assert torch.equal(plane[v], single)


@pytest.mark.parametrize("bad", [torch.zeros(4, 6, 3), torch.zeros(5, 6, 3, dtype=torch.uint8), torch.zeros(4, 6, dtype=torch.uint8)])
def test_bad_input_is_rejected(bad):
    with pytest.raises(ValueError):
        rgb_to_i420(bad)


def test_i420_planes_split_a_yuv420p_frame_as_pyav_lays_it_out():
    rgb = torch.randint(0, 256, (36, 52, 3), dtype=torch.uint8)
    frame = av.VideoFrame.from_ndarray(rgb.numpy(), format="rgb24").reformat(format="yuv420p")
    packed = torch.from_numpy(frame.to_ndarray())
    assert packed.shape == (54, 52)
    for got, plane in zip(i420_planes(packed), frame.planes, strict=True):
        expected = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        assert torch.equal(got, torch.from_numpy(expected.copy()))
