"""The benchmark plots draw the committed results files (their schema is what the GPU scripts write)."""

import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.mark.parametrize(
    "script, results",
    [
        ("plot_rasterizer.py", "rasterizer-h100-ce1c61d.json"),
        ("plot_sessions.py", "sessions-h200-bdfcf86.json"),
    ],
)
def test_plot_scripts_draw_committed_results(tmp_path, script, results):
    source = tmp_path / results
    shutil.copy(RESULTS / results, source)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), str(source)], check=True, capture_output=True)
    image = matplotlib.image.imread(source.with_suffix(".png"))
    height, width = image.shape[:2]
    assert width > 1000 and height > 400
    assert image[..., :3].std() > 0.05, "the plot is blank"
