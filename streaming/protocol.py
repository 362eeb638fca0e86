"""Pose protocol v1: what clients send on the ``pose`` data channel, and what comes back.

Client -> server (JSON text)::

    {"v": 1, "type": "pose", "seq": 17, "t": 12345.6, "width": 1280, "height": 720,
     "views": [{"matrix": [16 numbers], "projection": [16 numbers]}, ...]}

``matrix`` is camera-to-world and ``projection`` an OpenGL projection, both column-major, exactly
as WebXR gives them (``XRView.transform.matrix``, ``XRView.projectionMatrix``). ``width`` and
``height`` are the size wanted per view. One view is mono; two are a stereo pair rendered side by
side (left, right) in one video frame.

Server -> client, one per video frame::

    {"type": "frame", "seq": 17, "t": 12345.6, "pts": 48000, "render_ms": 3.1, "convert_ms": 0.4, "encode_ms": 2.2}

naming the pose ``seq`` that frame shows, echoing the client's ``t``, and giving the frame's media
timestamp ``pts`` (90 kHz ticks since the stream's first frame, i.e. the RTP timestamp less its
random origin), so a receiver can pair each decoded frame with its pose.

The channel is unordered and lossy, so messages may arrive out of order: anything not newer than
the newest pose seen is stale and dropped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from ..engine.cameras import Views

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 4096
"""A stereo pose is about 1.5 KB of JSON; anything much larger is not a pose."""
_NUMBER_TYPES = frozenset((int, float))


class PoseError(ValueError):
    """A pose message that cannot be used; the session drops it, counts it and streams on."""


@dataclass(frozen=True)
class SizeLimits:
    """Per-view render size bounds, in pixels. Requests are scaled down (keeping aspect) to fit."""

    max_width: int = 1920
    max_height: int = 1080
    min_size: int = 16

    def clamp(self, width: int, height: int) -> tuple[int, int]:
        """Fit (width, height) inside the limits, keeping aspect ratio, rounded to even pixels
        (4:2:0 chroma needs even sizes)."""
        scale = min(1.0, self.max_width / width, self.max_height / height)
        w = max(self.min_size, int(width * scale) // 2 * 2)
        h = max(self.min_size, int(height * scale) // 2 * 2)
        return min(w, self.max_width // 2 * 2), min(h, self.max_height // 2 * 2)


@dataclass(frozen=True)
class PoseRequest:
    """A validated pose: OpenGL camera-to-world and projection matrices (row-major) per view."""

    seq: int
    client_time: float
    width: int
    height: int
    camera_to_world: np.ndarray  # (V, 4, 4) float32, OpenGL camera axes
    projection: np.ndarray  # (V, 4, 4) float32
    received_at: float = field(default_factory=time.monotonic)
    """Server monotonic clock at parse time: the start of pose-to-encoded latency."""

    @property
    def num_views(self) -> int:
        return self.camera_to_world.shape[0]

    def views(self) -> Views:
        """The OpenCV views the rasterizer takes, one per eye, at the requested per-view size.

        Computed once per pose: a pose is rendered for every frame until a newer one arrives."""
        return self._views

    @cached_property
    def _views(self) -> Views:
        # What engine.cameras' opengl_to_opencv, invert_rigid and intrinsics_from_projection
        # compute, in plain Python on each view's lists: this runs on the event loop for every
        # pose of every session, where their thirty-odd torch calls on 4x4s took ~0.3 ms a pose.
        world_to_camera = np.array([_world_to_camera(m) for m in self.camera_to_world.tolist()], dtype=np.float32)
        intrinsics = np.array([_intrinsics(p, self.width, self.height) for p in self.projection.tolist()], dtype=np.float32)
        return Views(torch.from_numpy(world_to_camera), torch.from_numpy(intrinsics), self.width, self.height)


def _world_to_camera(camera_to_world: list[list[float]]) -> list[list[float]]:
    """OpenCV world-to-camera of one OpenGL camera-to-world [R t; 0 1]: [Q -Qt; 0 1], with Q
    the transpose of R whose y and z rows are negated (OpenGL cameras look down -z, y up)."""
    (r00, r01, r02, tx), (r10, r11, r12, ty), (r20, r21, r22, tz) = camera_to_world[:3]
    q = ((r00, r10, r20), (-r01, -r11, -r21), (-r02, -r12, -r22))
    return [[a, b, c, -(a * tx + b * ty + c * tz)] for a, b, c in q] + [[0.0, 0.0, 0.0, 1.0]]


def _intrinsics(projection: list[list[float]], width: int, height: int) -> list[list[float]]:
    """OpenCV intrinsics of one OpenGL projection (``engine.cameras.intrinsics_from_projection``)."""
    fx, fy = projection[0][0] * width / 2, projection[1][1] * height / 2
    cx, cy = (1 - projection[0][2]) * width / 2, (1 + projection[1][2]) * height / 2
    return [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]


def _finite(values: Iterable[int | float]) -> bool:
    """All finite as floats: a JSON integer can be too large for one."""
    try:
        return all(map(math.isfinite, values))
    except OverflowError:
        return False


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite((value,)):
        raise PoseError(f"{name} must be a finite number")
    return float(value)


def _matrix(values: object, name: str) -> list[float]:
    """16 column-major numbers, checked in plain Python: a server parses every pose of every
    session on its event loop, where a numpy call on a 4x4 costs more than its arithmetic."""
    if not isinstance(values, list) or len(values) != 16 or not _NUMBER_TYPES.issuperset(map(type, values)):
        raise PoseError(f"{name} must be a list of 16 numbers")
    if not _finite(values):
        raise PoseError(f"{name} must hold finite numbers")
    return values


def _rigid(matrix: list[float], name: str) -> None:
    """``matrix`` is column-major: the rotation's rows are matrix[r:r + 9:4], the last row matrix[3::4]."""
    x, y, z = (matrix[r : r + 9 : 4] for r in range(3))
    gram = (_dot(x, x) - 1, _dot(y, y) - 1, _dot(z, z) - 1, _dot(x, y), _dot(x, z), _dot(y, z))  # R R^T - I
    if max(map(abs, gram)) > 1e-3 or max(abs(matrix[3]), abs(matrix[7]), abs(matrix[11]), abs(matrix[15] - 1)) > 1e-6:
        raise PoseError(f"{name} is not a rigid camera-to-world transform")


def _dot(a: list[float], b: list[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _row_major(matrices: list[list[float]]) -> np.ndarray:
    """(V, 4, 4) float32 from V lists of 16 column-major numbers."""
    return np.ascontiguousarray(np.array(matrices, dtype=np.float32).reshape(-1, 4, 4).transpose(0, 2, 1))


def parse_pose(message: str | bytes, limits: SizeLimits) -> PoseRequest:
    """Validate one pose message; raise ``PoseError`` saying what is wrong."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise PoseError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(message)
    except (ValueError, UnicodeDecodeError) as error:
        raise PoseError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise PoseError("message must be a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise PoseError(f"unsupported protocol version {data.get('v')!r}, expected {PROTOCOL_VERSION}")
    if data.get("type") != "pose":
        raise PoseError(f"unknown message type {data.get('type')!r}")
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise PoseError("seq must be a non-negative integer")
    client_time = _number(data.get("t", 0.0), "t")
    width, height = (_number(data.get(key), key) for key in ("width", "height"))
    if width < 1 or height < 1:
        raise PoseError("width and height must be at least 1")
    views = data.get("views")
    if not isinstance(views, list) or len(views) not in (1, 2):
        raise PoseError("views must list one (mono) or two (stereo) views")
    matrices, projections = [], []
    for i, view in enumerate(views):
        if not isinstance(view, dict):
            raise PoseError(f"views[{i}] must be an object")
        matrix = _matrix(view.get("matrix"), f"views[{i}].matrix")
        _rigid(matrix, f"views[{i}].matrix")
        projection = _matrix(view.get("projection"), f"views[{i}].projection")
        if projection[0] <= 0 or projection[5] <= 0 or projection[11] != -1:  # P[0, 0], P[1, 1], P[3, 2]
            raise PoseError(f"views[{i}].projection is not an OpenGL perspective projection")
        matrices.append(matrix)
        projections.append(projection)
    w, h = limits.clamp(int(width), int(height))
    return PoseRequest(seq, client_time, w, h, _row_major(matrices), _row_major(projections))


def frame_message(seq: int, client_time: float, pts: int, timings_ms: dict[str, float]) -> str:
    """The message that tells a client which pose a video frame shows."""
    timings = {k: round(v, 3) for k, v in timings_ms.items()}
    return json.dumps({"type": "frame", "seq": seq, "t": client_time, "pts": pts, **timings})
