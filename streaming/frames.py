"""Views of an avatar -> encoder-ready I420 video frames, on whichever rasterizer this machine has.

Many streams' views go through one batched render call; each stream then gets its own frame,
its stereo views laid side by side (left, right), as the pose protocol promises. On a CUDA
machine with the splatcast kernels built, the GPU writes I420 planes directly; on the CPU the
reference renderer draws RGB and libswscale converts it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import av
import torch

from ..engine.cameras import Views
from ..engine.gaussians import GaussianCloud
from ..kernels import reference

logger = logging.getLogger(__name__)


@dataclass
class RenderedFrame:
    frame: av.VideoFrame
    render_ms: float
    """Time of the whole batched render call this frame came from."""
    convert_ms: float


def side_by_side(images: torch.Tensor) -> torch.Tensor:
    """(V, H, W, C) -> (H, V * W, C): view 0 on the left."""
    v, h, w, c = images.shape
    return images.permute(1, 0, 2, 3).reshape(h, v * w, c)


class FrameRenderer:
    """Renders one avatar. ``render(views, views_per_frame)`` is the per-frame hot path."""

    def __init__(self, cloud: GaussianCloud, background: tuple[float, float, float] = (0.0, 0.0, 0.0), device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.background = background
        self.cloud = cloud.to(self.device)
        self._cuda = None
        if self.device.type == "cuda":
            try:
                from ..kernels.cuda_rasterizer import CudaRasterizer

                self._cuda = CudaRasterizer(capacity=len(cloud))
                logger.info("rasterizer: splatcast CUDA kernels on %s", torch.cuda.get_device_name(self.device))
            except (ImportError, RuntimeError) as error:
                logger.warning("rasterizer: CUDA kernels unavailable (%s); using the PyTorch reference on the GPU", error)
        else:
            logger.info("rasterizer: PyTorch reference on the CPU")

    def render(self, views: Views, views_per_frame: list[int] | None = None) -> list[RenderedFrame]:
        """One frame per entry of ``views_per_frame`` (default: all views in one frame)."""
        counts = views_per_frame or [len(views)]
        start = time.perf_counter()
        if self._cuda is not None:
            i420 = self._cuda.render_i420(self.cloud, views, self.background, counts)
            render_ms = 1e3 * (time.perf_counter() - start)
            frames = []
            for image in i420:
                convert_start = time.perf_counter()
                # No copy: the frame wraps (and keeps alive) the rasterizer's fresh pinned memory.
                frame = av.VideoFrame.from_numpy_buffer(image.numpy(), format="yuv420p")
                frames.append(RenderedFrame(frame, render_ms, 1e3 * (time.perf_counter() - convert_start)))
            return frames
        images = reference.to_uint8(reference.render(self.cloud, views, self.background)).cpu()
        render_ms = 1e3 * (time.perf_counter() - start)
        frames = []
        for group in images.split(counts):
            convert_start = time.perf_counter()
            frame = av.VideoFrame.from_ndarray(side_by_side(group).numpy(), format="rgb24").reformat(format="yuv420p")
            frames.append(RenderedFrame(frame, render_ms, 1e3 * (time.perf_counter() - convert_start)))
        return frames
