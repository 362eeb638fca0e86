"""The INRIA 3D Gaussian Splatting PLY file: what the 3DGS trainer writes and most viewers open.

One ``vertex`` element, binary little-endian, one float32 property per raw 3DGS value::

    x y z                 centre, metres
    nx ny nz              unused by 3DGS; written as zeros, ignored when read (may be absent)
    f_dc_0..2             SH band 0 per channel (sh[:, 0, c])
    f_rest_0..3(K-1)-1    SH bands 1..K-1, channel-major: f_rest_{c*(K-1) + k-1} = sh[:, k, c]
    opacity               logit of the opacity
    scale_0..2            log of the per-axis standard deviation
    rot_0..3              rotation quaternion, wxyz, not necessarily normalised

with 0, 9, 24 or 45 ``f_rest`` properties for SH degree 0..3. ``read_raw``/``write_raw`` move these
raw values between file and tensors bit-exactly; ``load_ply``/``save_ply`` add the activations
(``GaussianCloud.from_raw``/``to_raw``).

Reading policy (every refusal is an ``AssetError`` naming the file and the problem):

- ASCII and big-endian PLY are refused (3DGS tools only write binary little-endian).
- Elements other than ``vertex`` and list properties are refused (e.g. the chunked
  "compressed" PLY of PlayCanvas, which is a different format).
- A missing required property is refused, naming every missing one. Required properties must be
  ``float`` or ``double`` (read as float32).
- Unknown extra scalar properties (trainers add their own channels: normals, filters, labels) are
  skipped with a ``UserWarning`` naming them: the Gaussians are still complete without them.
- A header count above ``max_gaussians`` is refused before the payload is read; a payload
  shorter (truncated) or longer (trailing bytes) than the header declares is refused.
- Gaussians with a NaN or Inf value, or whose log scale overflows float32 when activated, are
  dropped with a ``UserWarning`` giving the count.
- A zero-length rotation quaternion is refused.

The header is parsed here and the payload read with one ``readinto`` into a numpy structured
array (a 1M-Gaussian degree-3 file loads in a fraction of a second). plyfile would do the reading
too, but it is only a test dependency, and its generic parse errors would still need translating
into every message above; the tests use it as an independent reader of the files written here.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from numpy.lib.recfunctions import structured_to_unstructured

from ..gaussians import AssetError, GaussianCloud, sh_degree_for
from ._validate import DEFAULT_MAX_GAUSSIANS, check_count, check_finite, check_rotations, finite_rows, warn_dropped

MAGIC = b"ply\n"
_HEADER_MAX_BYTES = 1 << 20

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip
_FLOAT_TYPES = {"float", "float32", "double", "float64"}
_NORMALS = ("nx", "ny", "nz")
_F_REST_COUNTS = {3 * ((d + 1) ** 2 - 1): d for d in range(4)}  # 0, 9, 24, 45 -> degree


def property_names(sh_degree: int) -> list[str]:
    """The INRIA property order for one SH degree (what ``write_raw`` writes)."""
    rest = [f"f_rest_{i}" for i in range(3 * ((sh_degree + 1) ** 2 - 1))]
    return ["x", "y", "z", *_NORMALS, "f_dc_0", "f_dc_1", "f_dc_2", *rest, "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip


def _required(sh_degree: int) -> list[str]:
    return [name for name in property_names(sh_degree) if name not in _NORMALS]


def _parse_header(source, head: bytes) -> tuple[int, list[tuple[str, str]], int]:
    """(vertex count, [(property name, PLY type)], payload offset) from the file's first bytes."""
    if not head:
        raise AssetError(f"{source}: file is empty")
    if not (head.startswith(MAGIC) or head.startswith(b"ply\r\n")):
        raise AssetError(f"{source}: not a PLY file (it does not start with 'ply')")
    end = head.find(b"\nend_header")
    if end < 0:
        raise AssetError(f"{source}: no 'end_header' line in the first {_HEADER_MAX_BYTES} bytes")
    end += len(b"\nend_header")
    for newline in (b"\n", b"\r\n"):
        if head.startswith(newline, end):
            offset = end + len(newline)
            break
    else:
        raise AssetError(f"{source}: 'end_header' is not followed by a newline")
    try:
        lines = head[:end].decode("ascii").split("\n")[1:]
    except UnicodeDecodeError:
        raise AssetError(f"{source}: PLY header is not ASCII text") from None

    count, properties, element = None, [], None
    for number, line in enumerate(lines, start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info", "end_header"):
            continue
        if words[0] == "format":
            if words[1:2] == ["ascii"]:
                raise AssetError(f"{source}: ASCII PLY is not supported (3DGS files are binary_little_endian)")
            if words[1:2] == ["binary_big_endian"]:
                raise AssetError(f"{source}: big-endian PLY is not supported (3DGS files are binary_little_endian)")
            if words[1:] != ["binary_little_endian", "1.0"]:
                raise AssetError(f"{source}: unsupported PLY format line {line.strip()!r}")
        elif words[0] == "element":
            if element is not None:
                raise AssetError(f"{source}: a second element {line.strip()!r}; only a single 'vertex' element is supported")
            if len(words) != 3 or words[1] != "vertex":
                raise AssetError(f"{source}: unsupported element line {line.strip()!r}; only a single 'vertex' element is supported")
            if not words[2].isdigit():
                raise AssetError(f"{source}: vertex count {words[2]!r} is not a non-negative integer")
            element, count = "vertex", int(words[2])
        elif words[0] == "property":
            if element is None:
                raise AssetError(f"{source}: header line {number}: property before any element")
            if words[1:2] == ["list"]:
                raise AssetError(f"{source}: list property {words[-1]!r} is not supported in a Gaussian PLY")
            if len(words) != 3:
                raise AssetError(f"{source}: header line {number}: malformed property line {line.strip()!r}")
            if words[1] not in _PLY_TYPES:
                raise AssetError(f"{source}: property {words[2]!r} has unknown type {words[1]!r}")
            properties.append((words[2], words[1]))
        else:
            raise AssetError(f"{source}: header line {number}: unknown keyword {words[0]!r}")
    if count is None:
        raise AssetError(f"{source}: no 'element vertex' line in the PLY header")
    if not any(line.split()[:1] == ["format"] for line in lines):
        raise AssetError(f"{source}: no 'format' line in the PLY header")
    return count, properties, offset


def _layout(source, properties: list[tuple[str, str]]) -> tuple[np.dtype, int]:
    """The record dtype (fields named as in the file) and the SH degree; checks the property set."""
    names = [name for name, _ in properties]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AssetError(f"{source}: duplicate properties {duplicates}")
    n_rest = sum(name.startswith("f_rest_") for name in names)
    if n_rest not in _F_REST_COUNTS:
        raise AssetError(f"{source}: {n_rest} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0..3)")
    degree = _F_REST_COUNTS[n_rest]
    required = _required(degree)
    missing = [name for name in required if name not in names]
    if missing:
        raise AssetError(f"{source}: missing required properties {missing}")
    types = dict(properties)
    not_float = [f"{name} ({types[name]})" for name in required if types[name] not in _FLOAT_TYPES]
    if not_float:
        raise AssetError(f"{source}: required properties must be float or double, got {not_float}")
    unknown = [name for name in names if name not in required and name not in _NORMALS]
    if unknown:
        warnings.warn(f"{source}: ignoring unknown PLY properties {unknown}", stacklevel=4)
    dtype = np.dtype({"names": names, "formats": [_PLY_TYPES[t] for _, t in properties]})
    return dtype, degree


def read_raw(path: str | os.PathLike, max_gaussians: int | None = DEFAULT_MAX_GAUSSIANS) -> dict[str, torch.Tensor]:
    """The raw float32 values exactly as stored, keyed like ``GaussianCloud.from_raw``'s arguments.

    Non-finite values are kept here; ``load_ply`` drops them.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        count, properties, offset = _parse_header(path, f.read(_HEADER_MAX_BYTES))
        dtype, degree = _layout(path, properties)
        check_count(path, count, max_gaussians)
        expected, available = count * dtype.itemsize, size - offset
        if available < expected:
            raise AssetError(
                f"{path}: truncated: the header declares {count} vertices ({expected} bytes) but {available} bytes follow it"
            )
        if available > expected:
            raise AssetError(f"{path}: {available - expected} bytes of trailing data after the {count} vertices")
        records = np.empty(count, dtype)
        f.seek(offset)
        if f.readinto(records.view(np.uint8)) != expected:
            raise AssetError(f"{path}: file shrank while being read")

    # One contiguous float32 copy in property_names order: x y z f_dc f_rest opacity scale rot.
    required = _required(degree)
    if all(dtype[name] == np.float32 for name in dtype.names):  # the usual file: a float32 table, ~4x faster
        columns = [dtype.names.index(name) for name in required]
        table = np.take(records.view(np.float32).reshape(count, len(dtype.names)), columns, axis=1)
    else:
        table = structured_to_unstructured(records[required], dtype=np.float32, copy=True)
    table = torch.from_numpy(table)
    bands = (degree + 1) ** 2 - 1
    means, f_dc, f_rest, opacity, log_scales, quats = table.split([3, 3, 3 * bands, 1, 3, 4], dim=1)
    return {
        "means": means.contiguous(),
        "quats": quats.contiguous(),
        "log_scales": log_scales.contiguous(),
        "opacity_logits": opacity[:, 0].contiguous(),
        "sh": torch.cat([f_dc[:, None], f_rest.reshape(count, 3, bands).transpose(1, 2)], dim=1),
    }


def write_raw(raw: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write raw 3DGS values (``GaussianCloud.to_raw``'s keys) as float32, in the INRIA layout."""
    sh = raw["sh"].detach().cpu().float()
    n, k = sh.shape[:2]
    degree = sh_degree_for(k)
    table = torch.cat(
        [
            raw["means"].detach().cpu().float(),
            torch.zeros(n, 3),
            sh[:, 0],
            sh[:, 1:].transpose(1, 2).reshape(n, 3 * (k - 1)),
            raw["opacity_logits"].detach().cpu().float()[:, None],
            raw["log_scales"].detach().cpu().float(),
            raw["quats"].detach().cpu().float(),
        ],
        dim=1,
    )
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in property_names(degree)]
    header += ["end_header", ""]
    with open(path, "wb") as f:
        f.write("\n".join(header).encode("ascii"))
        f.write(table.numpy().astype("<f4", copy=False).tobytes())


def load_ply(path: str | os.PathLike, max_gaussians: int | None = DEFAULT_MAX_GAUSSIANS) -> GaussianCloud:
    """A Gaussian cloud from an INRIA 3DGS PLY file (policy in the module docstring)."""
    raw = read_raw(path, max_gaussians)
    total = len(raw["means"])
    finite = finite_rows(*raw.values())
    if not finite.all():
        raw = {name: value[finite] for name, value in raw.items()}
    check_rotations(path, raw["quats"])
    # Scale by the largest component first, so the norm in from_raw cannot under- or overflow.
    raw["quats"] = raw["quats"] / raw["quats"].abs().amax(dim=1, keepdim=True)
    cloud = GaussianCloud.from_raw(**raw)
    finite = finite_rows(cloud.scales)  # a finite log scale can still overflow exp()
    if not finite.all():
        cloud = cloud.subset(finite)
    warn_dropped(path, total - len(cloud), total)
    return cloud


def save_ply(cloud: GaussianCloud, path: str | os.PathLike) -> None:
    """Write ``cloud`` as an INRIA 3DGS PLY (opens in the usual 3DGS viewers)."""
    check_finite(path, cloud)
    write_raw(cloud.to_raw(), path)
