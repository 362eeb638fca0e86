"""Rebuild the bundled sample avatar from scikit-image's ``astronaut`` photo.

    python -m splatcast.engine.sample [--output PATH] [--docs DIR] [--num-gaussians N]

The photo is NASA's public-domain portrait of Eileen Collins (1992) that scikit-image ships as
``skimage.data.astronaut()``. It is a head-and-shoulders shot cut off at the chest, so the
avatar is a bust: the body prior is fitted to the visible part only, the rest of the fitted
body is dropped, and the cut at the chest is closed flat. Made by the weight-free path
(``engine.weightfree``), so anyone can rebuild it bit for bit with no weights.

World placement: metres, y up, facing +z, as if standing on y = 0 (the fitted body's soles),
so the bust floats at chest-to-head height, from about 0.93 m to 1.63 m, its bounding box centred
on x = z = 0. Front and side renders (from her right, azimuth -90 degrees) go to
``docs/sample_front.png`` and ``docs/sample_side.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ..config import sample_avatar_path
from .formats import save_asset
from .gaussians import GaussianCloud
from .images import load_image
from .prior import fit_body
from .segmentation import segment_person
from .weightfree import reconstruct

SAMPLE_NUM_GAUSSIANS = 20_000
"""Small enough for the CPU server to stream 640x480 at full rate."""
RENDER_SIZE = (480, 640)
"""Width, height of the README renders."""


def build_sample_avatar(num_gaussians: int = SAMPLE_NUM_GAUSSIANS, seed: int = 0) -> GaussianCloud:
    """The sample avatar from ``skimage.data.astronaut()`` by the weight-free path."""
    from skimage.data import astronaut

    torch.manual_seed(seed)
    image = load_image(astronaut())
    segmentation = segment_person(image)
    fit = fit_body(segmentation)
    return reconstruct(image, segmentation, fit, num_gaussians=num_gaussians, seed=seed)


def render_turntable(cloud: GaussianCloud, azimuths: list[float], size: tuple[int, int] = RENDER_SIZE) -> list[np.ndarray]:
    """uint8 renders (H, W, 3) of ``cloud`` framed whole, one per azimuth (degrees, 0 = front)."""
    from ..kernels import reference
    from .cameras import Views, frame_bounds, intrinsics_from_fov, invert_rigid, orbit_camera

    fov = 30.0
    width, height = size
    centre, radius = frame_bounds(*cloud.bounds(), fov)
    poses = torch.stack([orbit_camera(a, 5.0, radius, centre) for a in azimuths])
    intrinsics = intrinsics_from_fov(fov, width, height).expand(len(azimuths), 3, 3)
    views = Views(invert_rigid(poses), intrinsics.contiguous(), width, height)
    images = reference.to_uint8(reference.render(cloud, views, (1.0, 1.0, 1.0)))
    return [image.numpy() for image in images]


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(prog="python -m splatcast.engine.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=sample_avatar_path(), help="where to write the .ply")
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="folder for sample_front.png / sample_side.png")
    parser.add_argument("--num-gaussians", type=int, default=SAMPLE_NUM_GAUSSIANS)
    parser.add_argument("--no-renders", action="store_true", help="skip the README renders")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cloud = build_sample_avatar(args.num_gaussians)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_asset(cloud, args.output)
    lo, hi = cloud.bounds()
    print(f"{args.output}: {len(cloud):,} Gaussians, bounds {lo.tolist()} .. {hi.tolist()} m, {time.perf_counter() - start:.1f} s")
    if not args.no_renders:
        args.docs.mkdir(parents=True, exist_ok=True)
        front, side = render_turntable(cloud, [0.0, -90.0])
        for name, image in (("sample_front.png", front), ("sample_side.png", side)):
            Image.fromarray(image).save(args.docs / name)
            print(args.docs / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
