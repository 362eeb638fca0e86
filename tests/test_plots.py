"""plot_results.py draws the committed results files (their schema is what the GPU scripts write)."""

import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.mark.parametrize("results", ["rasterizer-h100-ce1c61d.json", "sessions-h200-bdfcf86.json", "latency-h100-97bd199.json"])
def test_plots_draw_committed_results(tmp_path, results):
    source = tmp_path / results
    shutil.copy(RESULTS / results, source)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot_results.py"), str(source)], check=True, capture_output=True)
    image = matplotlib.image.imread(source.with_suffix(".png"))
    height, width = image.shape[:2]
    assert width > 1000 and height > 400
    assert image[..., :3].std() > 0.05, "the plot is blank"
