"""The layer folders install under ``splatcast.*`` only: no bare ``kernels`` or ``streaming``."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        cwd=out,
    )
    (path,) = out.glob("splatcast-*.whl")
    return zipfile.ZipFile(path)


def test_only_the_splatcast_package_is_installed(wheel):
    top_level = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"splatcast"}


def test_layers_package_data_and_console_script_are_in_the_wheel(wheel):
    wheel_names = set(wheel.namelist())
    for module in ("engine/gaussians.py", "kernels/reference.py", "streaming/server.py", "export/__init__.py", "cli.py"):
        assert f"splatcast/{module}" in wheel_names
    assert "splatcast/streaming/web/index.html" in wheel_names
    assert "splatcast/data/sample_avatar.ply" in wheel_names
    entry_points = next(n for n in wheel_names if n.endswith("entry_points.txt"))
    assert "splatcast = splatcast.cli:main" in wheel.read(entry_points).decode()


def test_layers_import_under_one_name():
    import splatcast.engine
    import splatcast.export
    import splatcast.kernels
    import splatcast.streaming

    for module in (splatcast.engine, splatcast.kernels, splatcast.streaming, splatcast.export):
        assert Path(module.__file__).parent.parent == ROOT


def test_installed_namesakes_of_the_layer_folders_win_when_run_from_the_tree(tmp_path):
    """``python -m`` in the checkout puts it first on sys.path: once splatcast is imported, bare
    ``kernels`` (Hugging Face's, which transformers imports) and ``streaming`` must resolve to the
    installed packages of those names (stand-ins here), not to the tree's folders."""
    for name in ("kernels", "streaming"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    script = "import importlib.util, splatcast; print(*(importlib.util.find_spec(n).origin for n in ('kernels', 'streaming')))"
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [Path(origin).parent.parent for origin in found] == [tmp_path, tmp_path], found
