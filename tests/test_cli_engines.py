"""``splatcast reconstruct`` / ``serve`` with the learned pipeline's engines, through the CLI's
own entry point, on a tiny checkpoint folder (random weights, its sizes in architecture.json)."""

import importlib.util
import json
import shutil

import aiohttp
import pytest
import torch
from splatcast.cli import main
from splatcast.engine.checkpoints import CHECKPOINT_FILES, save_checkpoints
from splatcast.engine.formats import load_asset
from splatcast.engine.lrt import LatentReconstructionTransformer
from splatcast.engine.pipeline import ARCHITECTURE_FILE, ReconstructionPipeline
from splatcast.engine.reconstruct import learned_pipeline, reconstruct_photo
from splatcast.streaming.server import SERVER_KEY

from .recon_configs import TINY_LRT, TINY_SYNTH, TINY_SYNTH_CONFIG, tiny_synthesizer
from .test_api import reconstructed, start
from .test_cli import one_line_error
from .test_jobs import reconstruction_processes

PIPELINE = {"fit_steps": 10, "max_prior_tokens": 256}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-checkpoints")
    torch.manual_seed(0)
    save_checkpoints(folder, tiny_synthesizer(), LatentReconstructionTransformer(TINY_LRT))
    sizes = {"synthesizer": TINY_SYNTH, "synth": vars(TINY_SYNTH_CONFIG), "lrt": TINY_LRT.to_dict(), "pipeline": PIPELINE}
    (folder / ARCHITECTURE_FILE).write_text(json.dumps(sizes))
    return folder


def test_reconstruct_with_the_eager_engine_is_the_pipeline_without_engines(checkpoints, photo_file, tmp_path):
    output, cache = tmp_path / "avatar.ply", tmp_path / "engines"
    code = main(["reconstruct", str(photo_file), "-o", str(output), "--checkpoints", str(checkpoints), "--engine", "eager", "--engine-cache", str(cache)])
    assert code == 0
    cloud = load_asset(output)
    assert len(cloud) == TINY_LRT.num_gaussians
    reference = ReconstructionPipeline.from_checkpoints(checkpoints, device="cpu", dtype=torch.float32)(photo_file, progress=False)[0]
    torch.testing.assert_close(cloud.means, reference.means, rtol=0, atol=1e-6)
    assert not cache.exists(), "the eager engine builds nothing"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_without_the_extra_is_a_one_line_error(checkpoints, photo_file, tmp_path, capsys):
    output = tmp_path / "avatar.ply"
    code = main(["reconstruct", str(photo_file), "-o", str(output), "--checkpoints", str(checkpoints), "--engine", "tensorrt", "--engine-cache", str(tmp_path)])
    assert code == 2 and not output.exists()
    assert "pip install 'splatcast[tensorrt]'" in one_line_error(capsys)
    # serve refuses at start-up, not on the first upload.
    assert main(["serve", "--checkpoints", str(checkpoints), "--engine", "tensorrt", "--port", "0"]) == 2
    assert "pip install 'splatcast[tensorrt]'" in one_line_error(capsys)


def test_unknown_engine_is_a_one_line_error(checkpoints, photo_file, tmp_path, capsys):
    code = main(["reconstruct", str(photo_file), "-o", str(tmp_path / "avatar.ply"), "--checkpoints", str(checkpoints), "--engine", "onnx"])
    assert code == 2
    assert "unknown engine 'onnx': choose one of eager, torch, tensorrt" in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_torch_engine_on_the_cpu_is_refused_before_the_weights_are_read(photo_file, tmp_path, capsys):
    """CPU + torch is an error, not a fall back to eager: the user asked for the GPU engine. The
    folder holds no weights at all, so the engine's refusal is what came first."""
    code = main(["reconstruct", str(photo_file), "-o", str(tmp_path / "avatar.ply"), "--checkpoints", str(tmp_path), "--engine", "torch"])
    assert code == 2
    assert "need a CUDA GPU; use the 'eager' engine" in one_line_error(capsys)


def command_line(command: str, photo_file, tmp_path) -> list[str]:
    """``reconstruct`` of the photo or ``serve``, before their checkpoint options."""
    return ["reconstruct", str(photo_file), "-o", str(tmp_path / "avatar.ply")] if command == "reconstruct" else ["serve", "--port", "0"]


@pytest.mark.parametrize("command", ["reconstruct", "serve"])
def test_missing_checkpoint_files_are_a_one_line_error_before_any_work(photo_file, tmp_path, capsys, command):
    """``serve`` too refuses at start, not on its first upload; every missing file is named."""
    (tmp_path / "vae.safetensors").write_bytes(b"")
    argv = command_line(command, photo_file, tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # as argparse's errors leave main
        main([*argv, "--checkpoints", str(tmp_path), "--engine", "eager"])
    assert exit_info.value.code == 2
    line = one_line_error(capsys)
    assert line.startswith("error: missing checkpoint file(s)")
    assert all((name in line) == (name != "vae.safetensors") for name in CHECKPOINT_FILES.values())


@pytest.mark.parametrize("command", ["reconstruct", "serve"])
def test_a_missing_checkpoint_folder_is_a_one_line_error(photo_file, tmp_path, capsys, command):
    argv = command_line(command, photo_file, tmp_path)
    assert main([*argv, "--checkpoints", str(tmp_path / "missing")]) == 2
    assert one_line_error(capsys) == f"error: checkpoint folder {tmp_path / 'missing'} does not exist"


def test_a_bad_architecture_file_is_a_one_line_error(checkpoints, photo_file, tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for file in checkpoints.iterdir():
        (folder / file.name).symlink_to(file)
    (folder / ARCHITECTURE_FILE).unlink()
    (folder / ARCHITECTURE_FILE).write_text(json.dumps({"lrt": {"dims": [32, 64], "depth": [1, 1]}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", str(photo_file), "-o", str(tmp_path / "avatar.ply"), "--checkpoints", str(folder), "--engine", "eager"])
    assert exit_info.value.code == 2
    assert "architecture.json does not describe the networks" in one_line_error(capsys)


def test_export_reports_each_graphs_engine_and_its_error(checkpoints, tmp_path, capsys):
    assert main(["export", "--checkpoints", str(checkpoints), "--engine", "eager", "--engine-cache", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    for graph in ("synth_step", "lrt"):
        (row,) = [line for line in report.splitlines() if graph in line and "│" in line]  # the table's row
        assert "eager" in row and "nothing to build" in row and "0.00e+00" in row, row


def test_a_process_loads_its_weights_once_and_anew_when_they_change_on_disk(checkpoints, photo_file, tmp_path):
    """What a server's long-lived reconstruction process relies on: the second photo reuses the
    loaded pipeline (same avatar), new weights in the folder are loaded for the next one."""
    folder = tmp_path / "weights"
    shutil.copytree(checkpoints, folder)
    options = {"checkpoints": folder, "engine": "eager", "engine_cache": tmp_path / "engines"}
    learned_pipeline.cache_clear()
    first = reconstruct_photo(photo_file, **options)
    second = reconstruct_photo(photo_file, **options)
    assert learned_pipeline.cache_info()[:2] == (1, 1), "(hits, misses): loaded once"
    torch.testing.assert_close(second.means, first.means, rtol=0, atol=0)

    torch.manual_seed(1)
    save_checkpoints(folder, tiny_synthesizer(), LatentReconstructionTransformer(TINY_LRT))
    third = reconstruct_photo(photo_file, **options)
    assert learned_pipeline.cache_info()[1] == 2, "the changed folder was loaded again"
    assert not torch.equal(third.means, first.means)


async def test_serve_starts_and_loads_its_reconstruction_process_with_the_server(tmp_path, checkpoints):
    server = await start(tmp_path, checkpoints=str(checkpoints), engine="eager", engine_cache=str(tmp_path / "engines"))
    jobs = server.app[SERVER_KEY].jobs
    try:
        pid = jobs.child_pid
        assert pid in reconstruction_processes(), "started with the server, before any photo"
        async with aiohttp.ClientSession() as http:
            record = await reconstructed(http, server)
        assert record["status"] == "ready" and record["gaussians"] == TINY_LRT.num_gaussians, record
        assert jobs.child_pid == pid
    finally:
        await server.close()
