"""Real programs the tests talk to (Chromium, a TURN server), from Debian's packages: installed
with apt when missing (only as root), and the test skipped, saying why, when they cannot be."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

_failures: dict[str, str] = {}
"""Why a package could not be installed, so that apt is tried once a run, not once a test."""
_updated = False


def ensure_installed(binary: Path, package: str) -> Path:
    """``binary``, installing ``package`` first when it is missing; skips the test otherwise."""
    global _updated
    if binary.exists():
        return binary
    if package not in _failures:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            _failures[package] = f"{binary} is missing and only root can install Debian's {package} (apt-get install {package})"
        else:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            commands = [["apt-get", "install", "-y", "-qq", package]]
            if not _updated:
                commands.insert(0, ["apt-get", "update", "-qq"])
            for command in commands:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    _failures[package] = f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}"
                    break
                _updated = _updated or command[1] == "update"
            else:
                if not binary.exists():
                    _failures[package] = f"apt-get installed {package} but {binary} is still missing"
    if package in _failures:
        pytest.skip(_failures[package])
    return binary
