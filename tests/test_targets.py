"""The committed results: every file says where it ran, and the README's targets table (benchmarks/targets.py) is what they say."""

import json
from pathlib import Path

import matplotlib.image
import pytest

from benchmarks import targets

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_is_made_from_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    block = readme.split(targets.README_BEGIN, 1)[1].split(targets.README_END, 1)[0]
    assert block.strip() == targets.markdown().strip(), "run: python benchmarks/targets.py --readme README.md --plot benchmarks/results/targets.png"


@pytest.mark.parametrize("target", targets.TARGETS, ids=lambda t: t.name)
def test_every_listed_file_holds_a_run_of_its_target(target):
    for source in target.sources:
        data = json.loads((targets.RESULTS / source.file).read_text())
        assert source.read(data), f"{source.file} has no run of {target.name!r}"


def _rasterizer_file(folder: Path, name: str, gpu: str, commit: str, ms: float) -> str:
    data = {"machine": gpu, "commit": commit, "cases": {"100k-1080p": {"splatcast_fp16": {"rgb_median_ms": ms}}}}
    (folder / name).write_text(json.dumps(data))
    return name


def test_each_run_is_judged_against_its_bound_per_gpu(tmp_path):
    files = [
        _rasterizer_file(tmp_path, "a.json", "NVIDIA H100 80GB HBM3", "1111111aaaa", 0.29),
        _rasterizer_file(tmp_path, "b.json", "NVIDIA H100 80GB HBM3", "2222222bbbb", 0.31),
    ]
    ceiling = targets.Target(3, "call", 0.30, " ms", targets.sources(tuple(files), targets.rasterizer_call("100k-1080p")))
    floor = targets.Target(3, "rate", 0.30, " ms", ceiling.sources, at_least=True, note="a floor")
    table = targets.markdown((ceiling, floor), tmp_path)
    rows = table.splitlines()
    assert rows[2] == "| #3 | call <= 0.3 ms | 0.29 (1111111), 0.31 (2222222) | not run | in 1 of 2 on the H100 |"
    assert rows[3] == "| #3 | rate >= 0.3 ms [1] | 0.29 (1111111), 0.31 (2222222) | not run | in 1 of 2 on the H100 |"
    assert "- [1] a floor." in rows
    assert floor.share_of_limit(0.31) < 1 < ceiling.share_of_limit(0.31)


def test_chart_draws_every_committed_run(tmp_path):
    path = tmp_path / "targets.png"
    targets.plot(path)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 400 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05, "the chart is blank"


def test_readme_without_the_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# a readme\n")
    with pytest.raises(SystemExit, match="has no block"):
        targets.replace_in_readme(readme, "| table |")
    assert readme.read_text() == "# a readme\n"


@pytest.mark.parametrize("path", sorted(targets.RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_results_file_names_its_device_date_and_commit(path):
    found = targets.provenance_of(json.loads(path.read_text()))
    assert all(found.values()), f"{path.name} does not say its {', '.join(k for k, v in found.items() if not v)}"
