"""Defaults and bundled data the CLI starts from."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SAMPLE_AVATAR_NAME = "sample_avatar.ply"


def sample_avatar_path() -> Path:
    """The bundled sample avatar (rebuilt by ``python -m splatcast.engine.sample``)."""
    return Path(str(resources.files("splatcast") / "data" / SAMPLE_AVATAR_NAME))


def default_engine_cache() -> Path:
    """Where built engines are kept unless ``--engine-cache`` says otherwise: ``splatcast export``
    fills it, ``reconstruct`` and ``serve`` load from it (or build into it on first use)."""
    return Path.home() / ".cache" / "splatcast" / "engines"


def usable_cpu_count() -> int:
    """The CPUs this process may run on: its affinity mask (``taskset``, a container's cpuset),
    not every CPU of the host, so that encoder threads and worker processes fit what is given."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
