"""On-disk cache of built engines, so a second start loads in seconds instead of recompiling.

An entry is a folder named after its key's digest, holding the engine's files and a
``manifest.json`` that records the full key and the SHA-256 and size of every file. The key
covers everything that makes a built engine wrong to reuse: the model's weights, the GPU (name
and compute capability), the torch / CUDA / splatcast versions, the precision, the input shapes
and the engine's options. Before an entry is used, its manifest is parsed, its key compared
field by field with the one asked for and every file re-hashed; an entry that fails any check
(truncated, corrupted, hand-edited, written by an older cache format) is deleted and rebuilt,
never loaded. Entries are built in a temporary folder and renamed into place, under a file
lock, so a crash mid-build or two processes building at once never leave a half-written entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..config import usable_cpu_count
from .graphs import Graph

MANIFEST = "manifest.json"
FORMAT = 2
"""Cache layout version; entries written under another one are rebuilt. 2: AOTInductor packages
are run in a child process before they are kept (entries of 1 were loaded unchecked)."""


def state_dict_digest(module: nn.Module) -> str:
    """SHA-256 over every state-dict entry's name, dtype, shape and the SHA-256 of its bytes.

    The entries are copied to the host and hashed side by side on a thread pool (hashlib and the
    copies release the GIL): one SHA-256 stream over the full UNet's FP32 weights took 10 s of a
    31 s cached start on the H200 host.
    """
    entries = sorted(module.state_dict().items())
    summary = hashlib.sha256()
    with ThreadPoolExecutor(usable_cpu_count()) as pool:
        for (name, tensor), digest in zip(entries, pool.map(_tensor_digest, (t for _, t in entries))):
            summary.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{digest};".encode())
    return summary.hexdigest()


def _tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
    return hashlib.sha256(data.numpy()).hexdigest()


def device_identity(device: torch.device | str) -> tuple[str, str]:
    """(device name, compute capability) of a CUDA device; ('cpu', '') for the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu", ""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


@dataclass(frozen=True)
class EngineKey:
    """Everything a built engine depends on. Two keys with equal fields share one entry."""

    graph: str
    engine: str
    weights: str
    dtype: str
    shapes: tuple[tuple[str, tuple[int, ...], str], ...]
    device: str
    capability: str
    torch_version: str = torch.__version__
    cuda_version: str = torch.version.cuda or ""
    splatcast_version: str = __version__
    options: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()

    def as_json(self) -> dict:
        """The key as JSON types (tuples become lists), as the manifest stores it."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def for_graph(cls, graph: Graph, engine: str, weights: str, **options) -> EngineKey:
        """The key of ``graph`` (in its own precision and shapes) built by ``engine`` on its device."""
        name, capability = device_identity(graph.device)
        return cls(
            graph=graph.name,
            engine=engine,
            weights=weights,
            dtype=str(graph.dtype).removeprefix("torch."),
            shapes=graph.signature(),
            device=name,
            capability=capability,
            options=tuple(sorted((k, str(v)) for k, v in options.items())),
        )

    @property
    def entry_name(self) -> str:
        return f"{self.graph}-{self.engine}-{self.digest()[:20]}"


@dataclass(frozen=True)
class CacheEntry:
    """A verified entry: its folder and manifest."""

    path: Path
    manifest: dict

    def file(self, name: str) -> Path:
        return self.path / name


class EngineCache:
    """Built engines under ``root``, one verified folder per key (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def lookup(self, key: EngineKey) -> CacheEntry | None:
        """The entry for ``key`` if it exists and passes every check; a failing one is deleted."""
        path = self.root / key.entry_name
        if not path.exists():
            return None
        manifest = self._verified_manifest(path, key)
        if manifest is None:
            shutil.rmtree(path, ignore_errors=True)
            return None
        return CacheEntry(path, manifest)

    def get_or_build(self, key: EngineKey, build: Callable[[Path], None]) -> tuple[CacheEntry, bool]:
        """The entry for ``key``, built by ``build(folder)`` when missing or invalid.

        ``build`` writes the engine's files into the empty folder it is given. Returns the entry
        and whether it was built now.
        """
        with self._lock(key):
            entry = self.lookup(key)
            if entry is not None:
                return entry, False
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key.entry_name}-", dir=self.root))
            try:
                start = time.perf_counter()
                build(staging)
                manifest = {
                    "format": FORMAT,
                    "key": key.as_json(),
                    "files": {
                        str(f.relative_to(staging)): {"sha256": _file_digest(f), "bytes": f.stat().st_size}
                        for f in sorted(staging.rglob("*"))
                        if f.is_file()
                    },
                    "build_seconds": round(time.perf_counter() - start, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
                (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
                final = self.root / key.entry_name
                shutil.rmtree(final, ignore_errors=True)
                staging.rename(final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return CacheEntry(final, manifest), True

    def _verified_manifest(self, path: Path, key: EngineKey) -> dict | None:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("key") != key.as_json():
            return None
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            return None
        for name, record in files.items():
            file = path / name
            try:
                if not file.is_file() or file.stat().st_size != record["bytes"] or _file_digest(file) != record["sha256"]:
                    return None
            except (OSError, KeyError, TypeError):
                return None
        return manifest

    @contextmanager
    def _lock(self, key: EngineKey) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{key.entry_name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
