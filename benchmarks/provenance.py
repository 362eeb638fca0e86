"""Where a results file's figures came from: the fields every file in benchmarks/results holds
besides its figures (``tests/test_targets.py`` checks that each has them)."""

import datetime
import os
import platform
import subprocess


def commit() -> str:
    """The code's commit: ``SPLATCAST_COMMIT`` where the tree has no git (the GPU machine's copy), else HEAD."""
    return os.environ.get("SPLATCAST_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def cpu_run() -> dict[str, str]:
    """Device, date and commit of a run on this machine's CPU."""
    return {"device": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores", "date": datetime.date.today().isoformat(), "commit": commit()}
