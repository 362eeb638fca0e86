"""The serving rasterizer: fused CUDA kernels (``csrc/``), many views per call, straight to the
8-bit RGB and I420 planes the encoder takes. Forward only; the image is that of ``reference.render``.

A frame is a fixed sequence of launches over buffers that only grow:

1. ``preprocess``: every Gaussian projected into every view (EWA, 0.3 px dilation, SH colour,
   the exact set of 16x16 tiles its opacity-aware ellipse meets).
2. One radix sort of all (view, Gaussian) entries by depth, a scan of their tile counts, pairs
   emitted in depth order, one stable radix sort of all pairs by (view | tile).
3. ``blend``: four blocks per 16x16 tile, one per 8x8 quarter (the longest tile lists first),
   splats staged in shared memory and culled per warp, early termination.
4. ``rgb_to_i420``: each view written into its frame, views of a frame side by side.

Since no launch depends on a value read back by the host, a whole frame is captured once per
shape in a CUDA graph and replayed. The image's address travels with the frame's inputs (view
parameters, background), so ``render`` gets each frame in a fresh device tensor with no copy
after the graph. The copy of the I420 frames to the host follows the graph,
into pinned memory fresh from PyTorch's pinned-memory cache each call: the frames then belong
to the caller (an encoder may wrap them without a copy while the next frame renders) and go
back to the cache when released. The only read-back is the pair count, after the frame: a
frame that made more pairs than its slots is rendered again with more slots (the graph is
re-captured), and past ``max_pairs`` it is rendered in chunks of the depth-ordered pair sequence,
carrying each pixel's colour and transmittance between chunks, so no Gaussian is ever dropped.

Storage: positions, opacities and every per-view intermediate are float32. With
``storage=torch.float16`` the rotations, scales and SH coefficients are stored in half precision
(16 + 96 bytes per degree-3 Gaussian instead of 32 + 192): their relative rounding (5e-4) moves a
splat's footprint and colour by well under one 8-bit level, while positions in half precision
would move a splat 1 mm per metre from the origin, a pixel at 1080p and 2 m.
"""

from __future__ import annotations

import math
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..engine.cameras import Views
from ..engine.gaussians import GaussianCloud

TILE_SIZE = 16
_SOURCES = ("bindings.cpp", "preprocess.cu", "sort.cu", "intersect.cu", "blend.cu", "i420.cu")
_MAX_ENTRIES = 2**31 - 1
"""Entries (views x Gaussians) per call: entry ids are 32-bit."""
_MAX_PLANS = 32
"""Call shapes kept, each with its buffers and captured graph: a server's batches vary in size
with the sessions due each tick (and in grouping, mono beside stereo), and a shape it meets
again must not be captured again."""
_PAIR_HEADROOM = 1.25
"""Pair slots made for a measured pair count, per pair: every slot is filled, sorted and scanned
each frame whether a pair lands in it or not, and a frame past its slots is rendered again."""
_SHRINK_AFTER = 64
"""Frames in a row using under half of a plan's pair slots before the slots shrink."""
_SHORT_DEPTH_KEY_BITS = 24
"""Depth-key bits where every view's span of depths fits them: a radix pass fewer than 31."""
_NEAR_PLANE = 0.01
"""Metres, as the kernels cull (``NEAR_PLANE`` in ``csrc/common.h``)."""
_FLOAT32, _UINT32 = struct.Struct("<f"), struct.Struct("<I")
_POLL_US = 20.0
"""Sleep between polls of a frame running past its expected end (Linux adds its timer slack,
50 us by default, to each sleep)."""

_extension = None
_extension_error: Exception | None = None
_extension_lock = threading.Lock()


class RasterizerUnavailable(RuntimeError):
    """No CUDA device, or the kernels failed to build; the message says which."""


def _load_extension():
    """Build (ninja, once; cached by torch in ``TORCH_EXTENSIONS_DIR``) and import the kernels."""
    global _extension, _extension_error
    with _extension_lock:
        if _extension is None and _extension_error is None:
            try:
                if not torch.cuda.is_available():
                    raise RasterizerUnavailable("no CUDA device")
                from torch.utils.cpp_extension import load

                csrc = Path(__file__).with_name("csrc")
                _extension = load(
                    name="splatcast_rasterizer",
                    sources=[str(csrc / name) for name in _SOURCES],
                    extra_cflags=["-O3"],
                    extra_cuda_cflags=["-O3", "--use_fast_math", "-lineinfo"],
                    verbose=os.environ.get("SPLATCAST_BUILD_VERBOSE") == "1",
                )
            except Exception as error:  # no compiler, no CUDA toolkit, a build error
                _extension_error = error
        if _extension is None:
            raise RasterizerUnavailable(f"splatcast CUDA kernels unavailable: {_extension_error}") from _extension_error
        return _extension


def is_available() -> bool:
    """True when a CUDA device is present and the kernels build and load (the first call builds)."""
    try:
        _load_extension()
    except RasterizerUnavailable:
        return False
    return True


@dataclass(frozen=True)
class PackedCloud:
    """A cloud in the kernels' layout, on the device: (N, 4) float32 means and opacity; (N, 8)
    quaternion wxyz, scale xyz and a pad; (N, stride) SH coefficients (K, 3) row-major, the
    stride padded to 8 values so that rows stay 16-byte aligned. ``centre`` and ``half_size``: the
    axis-aligned box around every mean, which bounds each view's depths (``depth_key_floors``)."""

    means_opacity: torch.Tensor
    shape: torch.Tensor
    sh: torch.Tensor
    sh_degree: int
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    half_size: tuple[float, float, float] = (math.inf, math.inf, math.inf)

    def __len__(self) -> int:
        return self.means_opacity.shape[0]

    @classmethod
    def from_cloud(cls, cloud: GaussianCloud, storage: torch.dtype, device: torch.device) -> PackedCloud:
        n, k = len(cloud), cloud.sh.shape[1]
        means_opacity = torch.cat([cloud.means, cloud.opacities[:, None]], dim=1).to(device, torch.float32)
        # Half precision tops out at 65504: a larger scale is a Gaussian over every pixel anyway.
        scales = cloud.scales.clamp_max(torch.finfo(storage).max)
        shape = torch.cat([cloud.quats, scales, cloud.scales.new_zeros(n, 1)], dim=1).to(device, storage)
        stride = -(-3 * k // 8) * 8
        sh = torch.zeros(n, stride, dtype=storage, device=device)
        sh[:, : 3 * k] = cloud.sh.reshape(n, 3 * k).to(device, storage)
        centre, half_size = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
        if n > 0:
            lowest, highest = cloud.means.detach().double().aminmax(dim=0)
            centre, half_size = tuple(((lowest + highest) / 2).tolist()), tuple(((highest - lowest) / 2).tolist())
        return cls(means_opacity.contiguous(), shape.contiguous(), sh, cloud.sh_degree, centre, half_size)


def depth_key_floors(
    world_to_camera: np.ndarray, centre: tuple[float, float, float], half_size: tuple[float, float, float]
) -> tuple[list[int], int]:
    """Per view, the float bits of a depth under every depth its Gaussians can have (from the
    box around their means, less a margin for the kernel's float32 rounding), and the depth
    keys' bits: the kernel keys each depth by its bits less its view's floor, exact since
    positive floats order as their bits, and in 24 bits where every view's span of bits fits
    them (an avatar 2-3 m away spans under 13M floats), else in 31 with floors of 0. Plain
    Python: it runs before every frame, and NumPy's per-call overhead is larger for a few views."""
    cx, cy, cz = centre
    hx, hy, hz = half_size
    floors = []
    for rx, ry, rz, t in world_to_camera[:, 2].tolist():
        depth = rx * cx + ry * cy + rz * cz + t
        reach = abs(rx) * hx + abs(ry) * hy + abs(rz) * hz  # the box's farthest corner along the view axis
        pad = reach + 1e-3 * (abs(depth) + reach) + 1e-4
        if not abs(depth) + pad < 1e30:  # unbounded, or past float32
            return [0] * len(world_to_camera), 31
        nearest, farthest = _float_bits(max(depth - pad, _NEAR_PLANE)), _float_bits(max(depth + pad, _NEAR_PLANE))
        if farthest - nearest >= 2**_SHORT_DEPTH_KEY_BITS - 1:
            return [0] * len(world_to_camera), 31
        floors.append(nearest)
    return floors, _SHORT_DEPTH_KEY_BITS


def _float_bits(value: float) -> int:
    return _UINT32.unpack(_FLOAT32.pack(value))[0]


def view_parameters(world_to_camera: np.ndarray, intrinsics: np.ndarray, depth_floors: list[int], depth_key_bits: int, out: np.ndarray) -> None:
    """Write the kernels' ``ViewParams`` rows into ``out`` ((V, 24) float32): the top three rows
    of each world-to-camera matrix and the intrinsics, row-major, copied as they are (this runs
    on the host before every frame, so the kernel derives the rest), then the depth keys' floor
    and largest value (under an all-ones key: culled entries sort last)."""
    out[:, :12] = world_to_camera[:, :3].reshape(-1, 12)
    out[:, 12:21] = intrinsics.reshape(-1, 9)
    words = out.view(np.uint32)
    words[:, 21] = depth_floors
    words[:, 22] = 2**depth_key_bits - 2


def frame_layout(width: int, height: int, views_per_frame: list[int]) -> tuple[torch.Tensor, list[tuple[int, int]], int]:
    """Where each view's I420 samples go: per view (frame byte offset, frame luma width, column),
    per frame (byte offset, luma width), and the total bytes. Frames start 64-byte aligned."""
    rows, frames, offset = [], [], 0
    for count in views_per_frame:
        frame_width = count * width
        frames.append((offset, frame_width))
        rows += [(offset, frame_width, i * width) for i in range(count)]
        offset += -(-(frame_width * height * 3 // 2) // 64) * 64
    return torch.tensor(rows, dtype=torch.int64), frames, offset


@dataclass
class _Plan:
    """Everything static for one shape of call: inputs staged for the graph, outputs, the graph.
    It holds the packed cloud whose pointers its graph captured."""

    packed: PackedCloud
    num_gaussians: int
    num_views: int
    view_floats: int  # per view in inputs: the kernels' ViewParams
    depth_key_bits: int  # 24 or 31, see depth_key_floors
    width: int
    height: int
    inputs_host: torch.Tensor  # pinned: view parameters, background (4 floats), the image's address (int64)
    inputs_np: np.ndarray  # the same memory, written per call
    inputs: torch.Tensor
    ranges: torch.Tensor  # (V * tiles, 2) each tile's [begin, end) in the sorted pairs
    order: torch.Tensor  # (4, V * tiles): tile loads, tile ids, and both sorted by load, descending
    pair_slots: int
    image: torch.Tensor | None = None  # I420 plans: the RGB views the conversion reads
    i420: torch.Tensor | None = None
    layout: torch.Tensor | None = None
    frame_spans: list[tuple[int, int]] = field(default_factory=list)  # each frame's (byte offset, luma width) in i420
    graph: torch.cuda.CUDAGraph | None = None
    graph_exec: int = 0  # the graph's cudaGraphExec_t, launched from C++
    frame_us: float = 0.0  # GPU time of the last frame, what the host sleeps through next time
    temp_checked: bool = False  # the shared sort storage is known to fit this plan's sorts
    measured: bool = False  # pair_slots comes from a frame's count, not the first guess
    underused: int = 0

    @property
    def views(self) -> torch.Tensor:
        return self.inputs[: self.view_floats * self.num_views].view(self.num_views, self.view_floats)

    @property
    def background(self) -> torch.Tensor:
        return self.inputs[self.view_floats * self.num_views :][:3]

    @property
    def image_slot(self) -> torch.Tensor:
        """The device copy of the image's address, which blending reads."""
        return self.inputs[self.view_floats * self.num_views + 4 :].view(torch.int64)

    def set_image(self, image: torch.Tensor) -> None:
        """Name the buffer this frame's RGB views go to (written with the other inputs)."""
        self.inputs_np[self.view_floats * self.num_views + 4 :].view(np.int64)[0] = image.data_ptr()

    @property
    def tiles_per_view(self) -> int:
        return math.ceil(self.width / TILE_SIZE) * math.ceil(self.height / TILE_SIZE)

    @property
    def pair_key_bits(self) -> int:
        # 2^bits > every tile key, so an unused slot's key (all bits set) sorts after all of them.
        return (self.num_views * self.tiles_per_view).bit_length()

    @property
    def pair_key_dtype(self) -> torch.dtype:
        """int16 keys while every tile key is under 0xffff (an unused slot's key): 2 bytes less
        per pair through emission, both sort passes and the tile ranges."""
        return torch.int16 if self.num_views * self.tiles_per_view < 0xFFFF else torch.int32


class CudaRasterizer:
    """Renders batches of views of one resolution with the CUDA kernels.

    ``capacity`` is the number of Gaussians the work buffers are first sized for; they grow
    when a call needs more (re-capturing graphs), as do the Gaussian/tile pair slots, up to
    ``max_pairs`` per pass, past which a call is rendered in several passes. ``storage`` is
    the dtype of rotations, scales and SH coefficients (float32 or float16, see module doc).
    ``graphs`` replays one captured CUDA graph per call shape (off: plain launches).
    ``spin_us``: how long before a frame's expected end (the GPU time of the last frame of the
    same shape, less the host's measured wake-up latency) the host stops sleeping and polls it,
    so that its end is seen at once while the core stays free for a server's encoders through
    the rest of the frame. A large value polls throughout: the least latency, a core per frame.

    Every call's output is the caller's: ``render`` renders into a fresh device tensor, and
    ``render_i420`` returns frames in fresh pinned memory.
    """

    def __init__(
        self,
        capacity: int = 1 << 18,
        *,
        storage: torch.dtype = torch.float16,
        max_pairs: int = 1 << 28,
        graphs: bool = True,
        spin_us: float = 100.0,
        device: torch.device | str | None = None,
    ) -> None:
        if storage not in (torch.float32, torch.float16):
            raise ValueError(f"storage must be torch.float32 or torch.float16, got {storage}")
        if not 0 < max_pairs < 2**31:
            raise ValueError(f"max_pairs must be in [1, 2^31), got {max_pairs}")
        self._ext = _load_extension()
        self.device = torch.device(device or "cuda")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.storage = storage
        self.max_pairs = int(max_pairs)
        self.graphs = graphs
        self.spin_us = float(spin_us)
        self._entry_capacity = 0
        self._pair_capacity = 0
        self._temp = torch.empty(0, dtype=torch.uint8, device=self.device)
        self._reserve_entries(max(int(capacity), 1))
        self._plans: OrderedDict[tuple, _Plan] = OrderedDict()
        self._packed: tuple[GaussianCloud, tuple, PackedCloud] | None = None
        self._total_host = torch.zeros(1, dtype=torch.int64, pin_memory=True)
        self._total_np = self._total_host.numpy()
        with torch.cuda.device(self.device):
            self._events = self._ext.FrameEvents()
        self._wake_us = 0.0  # how late the host's sleeps end, a moving average
        self.passes = 0
        """Passes of the last call: 1, or the number of chunks of a call past ``max_pairs``."""

    # Buffers ---------------------------------------------------------------------------------

    def _reserve_entries(self, entries: int) -> None:
        if entries <= self._entry_capacity:
            return
        entries = max(entries, self._entry_capacity * 5 // 4)
        f32 = {"dtype": torch.float32, "device": self.device}
        i32 = {"dtype": torch.int32, "device": self.device}
        i64 = {"dtype": torch.int64, "device": self.device}
        self._splats = torch.empty(entries, 8, **f32)
        self._depth_keys = torch.empty(entries, **i32)
        self._entry_ids = torch.empty(entries, **i32)
        self._tile_counts = torch.empty(entries, **i32)
        self._depth_keys_sorted = torch.empty(entries, **i32)
        self._entries_sorted = torch.empty(entries, **i32)
        self._ends = torch.empty(entries, **i64)
        self._entry_capacity = entries
        self._invalidate_graphs()

    def _reserve_pairs(self, pairs: int) -> None:
        if pairs <= self._pair_capacity:
            return
        i32 = {"dtype": torch.int32, "device": self.device}
        self._pair_keys = torch.empty(pairs, **i32)
        self._pair_values = torch.empty(pairs, **i32)
        self._pair_keys_sorted = torch.empty(pairs, **i32)
        self._pair_values_sorted = torch.empty(pairs, **i32)
        self._pair_capacity = pairs
        self._invalidate_graphs()

    def _reserve_temp(self, plan: _Plan, pairs: int) -> None:
        entries, tiles = plan.num_views * plan.num_gaussians, len(plan.ranges)
        needed = self._ext.sort_temp_bytes(entries, pairs, plan.pair_key_bits, plan.pair_key_dtype == torch.int16, tiles)
        if needed > self._temp.numel():
            self._temp = torch.empty(needed, dtype=torch.uint8, device=self.device)
            self._invalidate_graphs()

    def _invalidate_graphs(self) -> None:
        for plan in getattr(self, "_plans", {}).values():
            plan.graph, plan.temp_checked = None, False

    def _pack(self, cloud: GaussianCloud | PackedCloud) -> PackedCloud:
        """The packed form of ``cloud``, cached while the same cloud object is passed unchanged."""
        if isinstance(cloud, PackedCloud):
            return cloud
        versions = tuple((t.data_ptr(), t._version) for t in (cloud.means, cloud.quats, cloud.scales, cloud.opacities, cloud.sh))
        if self._packed is not None and self._packed[0] is cloud and self._packed[1] == versions:
            return self._packed[2]
        packed = PackedCloud.from_cloud(cloud, self.storage, self.device)
        self._packed = (cloud, versions, packed)
        return packed

    def _plan(self, packed: PackedCloud, views: Views, views_per_frame: list[int] | None, depth_key_bits: int) -> _Plan:
        v, n = len(views), len(packed)
        if v * n > _MAX_ENTRIES:
            raise ValueError(f"{v} views x {n} Gaussians exceed {_MAX_ENTRIES} entries per call; split the batch")
        key = (id(packed), n, v, views.width, views.height, tuple(views_per_frame) if views_per_frame else None, depth_key_bits)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        view_floats = self._ext.VIEW_FLOATS
        inputs_host = torch.zeros(view_floats * v + 6, dtype=torch.float32, pin_memory=True)
        tiles = v * math.ceil(views.width / TILE_SIZE) * math.ceil(views.height / TILE_SIZE)
        plan = _Plan(
            packed=packed,
            num_gaussians=n,
            num_views=v,
            view_floats=view_floats,
            depth_key_bits=depth_key_bits,
            width=views.width,
            height=views.height,
            inputs_host=inputs_host,
            inputs_np=inputs_host.numpy(),
            inputs=torch.zeros_like(inputs_host, device=self.device),
            ranges=torch.zeros(tiles, 2, dtype=torch.int32, device=self.device),
            order=torch.zeros(4, tiles, dtype=torch.int32, device=self.device),
            pair_slots=min(self.max_pairs, max(4 * v * n, 1 << 16)),
        )
        if views_per_frame is not None:
            layout, frames, total = frame_layout(views.width, views.height, views_per_frame)
            plan.layout = layout.to(self.device)
            plan.image = self._image_for(plan)
            plan.i420 = torch.empty(total, dtype=torch.uint8, device=self.device)
            plan.frame_spans = frames
        self._plans[key] = plan
        while len(self._plans) > _MAX_PLANS:
            self._plans.popitem(last=False)
        return plan

    # Launches --------------------------------------------------------------------------------

    def _project_and_sort(self, packed: PackedCloud, plan: _Plan) -> None:
        """Stages 1 and 2a: entries, their depth order and the prefix sums of their tile counts."""
        ext, entries = self._ext, plan.num_views * plan.num_gaussians
        ext.preprocess(
            packed.means_opacity, packed.shape, packed.sh, packed.sh_degree, plan.views, plan.width, plan.height,
            self._splats, self._depth_keys, self._entry_ids, self._tile_counts,
        )
        ext.sort_depths(
            self._temp, self._depth_keys, self._entry_ids, self._depth_keys_sorted, self._entries_sorted, entries,
            plan.depth_key_bits,
        )
        ext.scan_tile_counts(self._temp, self._entries_sorted, self._tile_counts, self._ends, entries)

    def _bin_and_blend(self, plan: _Plan, base: int, slots: int, state: torch.Tensor | None, resume: bool, final: bool) -> None:
        """Stages 2b and 3 for the pairs [base, base + slots) of the depth-ordered sequence."""
        ext, entries = self._ext, plan.num_views * plan.num_gaussians
        keys = self._pair_keys.view(plan.pair_key_dtype)[:slots]
        keys_sorted = self._pair_keys_sorted.view(plan.pair_key_dtype)[:slots]
        keys.fill_(-1)  # all bits set: slots no pair fills sort last and belong to no tile
        ext.emit_pairs(
            self._entries_sorted, self._ends, self._splats, entries, plan.num_gaussians, plan.width, plan.height,
            base, slots, keys, self._pair_values,
        )
        ext.sort_pairs(self._temp, keys, self._pair_values, keys_sorted, self._pair_values_sorted, slots, plan.pair_key_bits)
        plan.ranges.zero_()
        ext.tile_ranges(keys_sorted, slots, plan.ranges)
        ext.order_tiles(self._temp, plan.ranges, *plan.order)
        ext.blend(
            plan.ranges, plan.order[3], self._pair_values_sorted, self._splats, entries, plan.background, plan.num_views,
            plan.width, plan.height, plan.image_slot, state, resume, final,
        )

    def _frame(self, packed: PackedCloud, plan: _Plan) -> None:
        """One whole single-pass frame, from the staged inputs to the I420 frames (on the GPU)
        and the host copy of the pair count: the sequence a graph captures."""
        self._ext.copy(plan.inputs, plan.inputs_host)
        self._project_and_sort(packed, plan)
        self._bin_and_blend(plan, 0, plan.pair_slots, None, False, True)
        self._convert_and_count(plan)

    def _convert_and_count(self, plan: _Plan) -> None:
        if plan.i420 is not None:
            self._ext.rgb_to_i420(plan.image, plan.layout, plan.i420)
        entries = plan.num_views * plan.num_gaussians
        if entries > 0:
            self._ext.copy(self._total_host, self._ends[entries - 1 : entries])

    def _run(self, packed: PackedCloud, plan: _Plan) -> None:
        entries = plan.num_views * plan.num_gaussians
        self._reserve_entries(entries)
        self._reserve_pairs(plan.pair_slots)
        if not plan.temp_checked:
            self._reserve_temp(plan, plan.pair_slots)
            plan.temp_checked = True
        if self.graphs and plan.graph is None:
            # Capture after an eager run on the same stream: lazy initialisation (cub's
            # kernels, the caching allocator) must not happen inside the capture.
            self._frame(packed, plan)
            # Thread-local capture: a server's other threads (reconstruction) may use the GPU meanwhile.
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._frame(packed, plan)
            plan.graph, plan.graph_exec = graph, graph.raw_cuda_graph_exec()
        self._events.start()
        if self.graphs:
            self._replay(plan)
        else:
            self._frame(packed, plan)

    def _replay(self, plan: _Plan) -> None:
        """Launch the plan's graph. Not ``CUDAGraph.replay``: that also advances the RNG state a
        capture might use, two small launches before every frame, and a frame draws no random numbers."""
        self._ext.launch_graph(plan.graph_exec)

    def _render(self, cloud: GaussianCloud | PackedCloud, views: Views, background, views_per_frame: list[int] | None) -> tuple[_Plan, torch.Tensor]:
        """Render and wait; return the plan and the caller's copy of the output (``_output``)."""
        if not isinstance(views, Views):
            raise TypeError(f"views must be a Views batch, got {type(views).__name__}")
        packed = self._pack(cloud)
        world_to_camera = views.world_to_camera.detach().cpu().numpy()
        depth_floors, depth_key_bits = depth_key_floors(world_to_camera, packed.centre, packed.half_size)
        plan = self._plan(packed, views, views_per_frame, depth_key_bits)
        views_end = plan.view_floats * plan.num_views
        view_parameters(
            world_to_camera, views.intrinsics.detach().cpu().numpy(), depth_floors, depth_key_bits,
            plan.inputs_np[:views_end].reshape(plan.num_views, plan.view_floats),
        )
        if isinstance(background, torch.Tensor):
            background = background.detach().cpu().numpy()
        plan.inputs_np[views_end : views_end + 3] = background
        with torch.cuda.device(self.device):
            # RGB calls get a fresh image each call, which the graph writes through the inputs.
            image = self._image_for(plan) if plan.i420 is None else plan.image
            plan.set_image(image)
            self.passes = 1
            self._run(packed, plan)
            # Queued before the one wait: the count is checked after the copy, which a frame that
            # overflowed its pair slots (rare) repeats.
            output = self._output(plan, image)
            total = self._finish(plan)
            if total > plan.pair_slots:
                if total <= self.max_pairs:
                    plan.pair_slots = self._pair_slots_for(total)
                    plan.graph, plan.temp_checked = None, False
                    self._run(packed, plan)
                else:
                    self._render_in_chunks(plan, total)
                output = self._output(plan, image)
                self._finish(plan)
                plan.measured = True
            else:
                self._fit_pair_slots(plan, total)
        return plan, output

    def _pair_slots_for(self, total: int) -> int:
        return min(self.max_pairs, max(int(total * _PAIR_HEADROOM), 1 << 16))

    def _fit_pair_slots(self, plan: _Plan, total: int) -> None:
        """Cut a plan's pair slots to the count measured, with headroom: at once after its first
        frame, whose slots were a guess (four pairs an entry), later only after _SHRINK_AFTER
        frames in a row using under half of them (each cut re-captures the graph)."""
        fitted = self._pair_slots_for(total)
        plan.underused = plan.underused + 1 if total < plan.pair_slots // 2 else 0
        if fitted < plan.pair_slots and (not plan.measured or plan.underused >= _SHRINK_AFTER):
            plan.pair_slots, plan.underused = fitted, 0
            plan.graph, plan.temp_checked = None, False
        plan.measured = True

    def _image_for(self, plan: _Plan) -> torch.Tensor:
        return torch.empty(plan.num_views, plan.height, plan.width, 3, dtype=torch.uint8, device=self.device)

    def _output(self, plan: _Plan, image: torch.Tensor) -> torch.Tensor:
        """The frame the caller keeps: the I420 frames, whose copy into fresh pinned memory this
        queues, where the plan makes them, else the RGB image the frame was rendered into."""
        if plan.i420 is None:
            return image
        output = torch.empty(plan.i420.numel(), dtype=torch.uint8, pin_memory=True)
        self._ext.copy(output, plan.i420)
        return output

    def _finish(self, plan: _Plan) -> int:
        """Wait for the frame; return the pairs it made, the one number the host reads."""
        sleep_us = max(0.0, plan.frame_us - self.spin_us - self._wake_us)
        overshoot_us = self._events.wait(sleep_us, self.spin_us, _POLL_US)
        if overshoot_us >= 0:
            self._wake_us += 0.25 * (overshoot_us - self._wake_us)
        plan.frame_us = self._events.gpu_us()
        return int(self._total_np[0]) if plan.num_views * plan.num_gaussians > 0 else 0

    def _render_in_chunks(self, plan: _Plan, total: int) -> None:
        """A frame of more than ``max_pairs`` pairs: consecutive ranges of the depth-ordered pair
        sequence, each pixel's colour and transmittance carried from one pass to the next. The
        entries and prefix sums from the single-pass attempt are still in place."""
        slots = self.max_pairs
        self._reserve_pairs(slots)
        self._reserve_temp(plan, slots)
        self._events.start()
        state = torch.empty(plan.num_views, plan.height, plan.width, 4, dtype=torch.float32, device=self.device)
        bases = range(0, total, slots)
        for i, base in enumerate(bases):
            self._bin_and_blend(plan, base, slots, state, resume=i > 0, final=i == len(bases) - 1)
        self._convert_and_count(plan)
        self.passes = len(bases)

    # Public API ------------------------------------------------------------------------------

    def render(
        self,
        cloud: GaussianCloud | PackedCloud,
        views: Views,
        background: tuple[float, float, float] | torch.Tensor = (0.0, 0.0, 0.0),
    ) -> torch.Tensor:
        """(V, H, W, 3) uint8 on the device: ``reference.to_uint8(reference.render(...))``."""
        return self._render(cloud, views, background, None)[1]

    def render_i420(
        self,
        cloud: GaussianCloud | PackedCloud,
        views: Views,
        background: tuple[float, float, float] | torch.Tensor = (0.0, 0.0, 0.0),
        views_per_frame: list[int] | None = None,
    ) -> list[torch.Tensor]:
        """One I420 frame per entry g of ``views_per_frame`` (default: all views in one frame),
        its views side by side: a (3H/2, g W) uint8 tensor in pinned host memory holding the Y
        rows, then U, then V (H/2 x g W/2 each), the ``yuv420p`` layout encoders take as it is
        (``colour.i420_planes`` splits it). The memory is the caller's: nothing reuses it while
        a frame is referenced. View sizes must be even."""
        counts = list(views_per_frame or [len(views)])
        if sum(counts) != len(views) or min(counts, default=1) < 1:
            raise ValueError(f"views_per_frame {counts} does not split {len(views)} views")
        if views.width % 2 or views.height % 2:
            raise ValueError(f"I420 needs even view sizes, got {views.width}x{views.height}")
        plan, host = self._render(cloud, views, background, counts)
        rows = views.height * 3 // 2
        return [host[offset : offset + rows * width].view(rows, width) for offset, width in plan.frame_spans]
