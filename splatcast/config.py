"""Defaults and bundled data the CLI starts from."""

from __future__ import annotations

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
