"""Avatars on disk: what was uploaded or reconstructed survives restarts and crashes.

Layout: ``<root>/<id>/`` holds ``meta.json`` (status, stage, reason, times, source), the source
(``photo.<ext>`` or ``upload.<ply|splat>``) and, once ready, ``avatar.ply``. Every file is written
to a temporary name in the same folder, flushed to disk and renamed, so a crash leaves either the
old file or the new one, never half of one; the asset is renamed into place before the metadata
says "ready", so nothing is listed ready without a complete asset. On start, ``recover`` re-checks
every avatar: a "ready" one whose asset does not load becomes "failed", and jobs that were queued or
running are queued again if their photo is there, else marked failed.

Ids are opaque 16-hex-digit tokens and are validated before they touch a path.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..engine.formats import AssetError, load_asset, save_asset
from ..engine.gaussians import GaussianCloud

Status = Literal["queued", "running", "ready", "failed"]
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
ASSET_NAME = "avatar.ply"
META_NAME = "meta.json"


class UnknownAvatar(KeyError):
    """No avatar with that id (or the id is not one splatcast could have issued)."""


@dataclass
class AvatarRecord:
    id: str
    status: Status
    source: str
    """File name of what the avatar was made from, inside its folder."""
    stage: str | None = None
    reason: str | None = None
    gaussians: int | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def public(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "source"}


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AvatarStore:
    def __init__(self, root: str | os.PathLike, max_gaussians: int) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_gaussians = max_gaussians

    def _folder(self, avatar_id: str) -> Path:
        if not isinstance(avatar_id, str) or not ID_PATTERN.match(avatar_id):
            raise UnknownAvatar(avatar_id)
        return self.root / avatar_id

    def get(self, avatar_id: str) -> AvatarRecord:
        meta = self._folder(avatar_id) / META_NAME
        try:
            return AvatarRecord(**json.loads(meta.read_text()))
        except FileNotFoundError:
            raise UnknownAvatar(avatar_id) from None

    def records(self) -> list[AvatarRecord]:
        found = []
        for folder in sorted(self.root.iterdir()):
            if ID_PATTERN.match(folder.name) and (folder / META_NAME).exists():
                found.append(self.get(folder.name))
        return found

    def put(self, record: AvatarRecord) -> None:
        record.updated = time.time()
        write_atomically(self._folder(record.id) / META_NAME, json.dumps(asdict(record)).encode())

    def create(self, source_name: str, data: bytes, status: Status) -> AvatarRecord:
        """A new avatar folder holding its source file; nothing is visible until meta.json is."""
        avatar_id = secrets.token_hex(8)
        folder = self._folder(avatar_id)
        folder.mkdir()
        write_atomically(folder / source_name, data)
        record = AvatarRecord(avatar_id, status, source_name)
        self.put(record)
        return record

    def source_path(self, record: AvatarRecord) -> Path:
        return self._folder(record.id) / record.source

    def asset_path(self, avatar_id: str) -> Path:
        return self._folder(avatar_id) / ASSET_NAME

    def finish(self, record: AvatarRecord, cloud: GaussianCloud) -> None:
        """Store the asset (atomically), then mark the avatar ready."""
        folder = self._folder(record.id)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{ASSET_NAME}.", suffix=".ply", delete=False) as tmp:
            pass
        save_asset(cloud, tmp.name)
        with open(tmp.name, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp.name, folder / ASSET_NAME)
        _fsync_dir(folder)
        record.status, record.stage, record.gaussians = "ready", None, len(cloud)
        self.put(record)

    def fail(self, record: AvatarRecord, reason: str) -> None:
        record.status, record.stage, record.reason = "failed", None, reason
        self.put(record)

    def load_source(self, record: AvatarRecord) -> GaussianCloud:
        """An uploaded asset, checked as any asset file is."""
        return load_asset(self.source_path(record), self.max_gaussians)

    def load(self, avatar_id: str) -> GaussianCloud:
        return load_asset(self.asset_path(avatar_id), self.max_gaussians)

    def delete(self, avatar_id: str) -> None:
        folder = self._folder(avatar_id)
        if not (folder / META_NAME).exists():
            raise UnknownAvatar(avatar_id)
        # Rename first: a crash mid-delete leaves a hidden folder, never a half-deleted avatar.
        doomed = folder.with_name(f".deleted-{avatar_id}-{secrets.token_hex(4)}")
        os.replace(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def recover(self) -> tuple[list[AvatarRecord], list[AvatarRecord]]:
        """After a restart: (ready avatars that load, jobs to run again). Leftover temporaries go."""
        for leftover in self.root.glob(".deleted-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for folder in self.root.iterdir():
            if ID_PATTERN.match(folder.name) and not (folder / META_NAME).exists():
                shutil.rmtree(folder, ignore_errors=True)  # created, crashed before its metadata
        ready, requeue = [], []
        for record in self.records():
            folder = self._folder(record.id)
            for temporary in folder.glob(".*"):
                temporary.unlink(missing_ok=True)
            if record.status == "ready":
                try:
                    self.load(record.id)
                    ready.append(record)
                except (AssetError, OSError) as error:
                    self.fail(record, f"stored asset is unreadable: {error}")
            elif record.status in ("queued", "running") and record.source.startswith("upload"):
                try:  # an asset upload cut short: its source is whole, so finish it now
                    self.finish(record, self.load_source(record))
                    ready.append(record)
                except (AssetError, OSError) as error:
                    self.fail(record, f"interrupted upload is unreadable: {error}")
            elif record.status in ("queued", "running"):
                if self.source_path(record).exists():
                    record.status, record.stage = "queued", None
                    self.put(record)
                    requeue.append(record)
                else:
                    self.fail(record, "interrupted, and its photo is missing")
        return ready, requeue
