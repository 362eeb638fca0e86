"""The ``splatcast`` command line through its own entry point: what it writes, and the one-line
errors that bad options and unwritable outputs get before any work is done."""

import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from splatcast.cli import main


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_render_writes_the_image_its_name_asks_for(tmp_path):
    output = tmp_path / "front.jpg"
    assert main(["render", "-o", str(output), "--width", "96", "--height", "64", "--background", "0", "0", "0"]) == 0
    with Image.open(output) as image:
        assert image.format == "JPEG" and image.size == (96, 64)
        pixels = np.asarray(image)
    assert pixels.max() > 64  # the sample avatar, not only the black background


@pytest.mark.parametrize("name", ["front.pngx", "missing/front.png", "."])
def test_render_refuses_an_output_it_cannot_write_before_rendering(tmp_path, capsys, name):
    output = tmp_path / name
    assert main(["render", "-o", str(output)]) == 2
    assert str(output.name if name != "." else tmp_path) in one_line_error(capsys)
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "reason"), [("avatar.obj", "unknown asset type"), ("missing/avatar.ply", "does not exist"), (".", "unknown asset type")])
def test_reconstruct_refuses_an_output_it_cannot_write_before_reconstructing(tmp_path, photo_file, capsys, name, reason):
    """A write that failed after the reconstruction would lose it: the output is checked first."""
    assert main(["reconstruct", str(photo_file), "-o", str(tmp_path / name)]) == 2
    line = one_line_error(capsys)  # the only line: "reconstructed ..." was never printed
    assert reason in line
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "70000"], "--port: must be between 0 and 65,535, got 70000"),
        (["serve", "--fps", "1000"], "--fps: must be between 1 and 240, got 1000"),
        (["serve", "--idle-timeout", "nan"], "--idle-timeout: must be between 1 and 86,400 s, got nan"),
        (["serve", "--max-size", "9000x1080"], "--max-size: sides must be between 16 and 8192, got 9000x1080"),
        (["serve", "--late-start", "0.3"], "--late-start: must be between 0 and 0.25 of a frame interval, got 0.3"),
        (["serve", "--workers", "two"], "--workers: expected an integer, got 'two'"),
        (["serve", "--switch-interval-ms", "fast"], "--switch-interval-ms: expected a number, got 'fast'"),
        (["reconstruct", "photo.png", "-o", "a.ply", "--gaussians", "50"], "--gaussians: must be between 100 and 5,000,000, got 50"),
        (["render", "-o", "a.png", "--fov", "0"], "--fov: must be between 1 and 170 degrees, got 0"),
        (["render", "-o", "a.png", "--width", "20000"], "--width: must be between 1 and 16,384, got 20000"),
        (["render", "-o", "a.png", "--background", "0", "2", "0"], "--background: must be between 0 and 1, got 2"),
    ],
)
def test_out_of_range_options_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--ice-server", "relay.example.org"], "error: ICE server 'relay.example.org': malformed uri: invalid scheme"),
    (["--ice-server", "turn:relay.example.org", "--turn-username", "viewer"], "error: TURN server 'turn:relay.example.org' needs a shared secret, or a username and a credential"),
])
def test_serve_refuses_ice_servers_it_could_not_use_before_starting(capsys, argv, message):
    assert main(["serve", "--port", "0", *argv]) == 2
    assert one_line_error(capsys).startswith(message)


def test_the_viewer_without_a_server_is_a_one_line_error():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "splatcast.streaming.viewer", f"http://127.0.0.1:{port}", "--seconds", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""  # the session sweep reads a failed viewer by its empty output
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("viewer: ClientConnectorError")
