"""ICE servers: a real TURN server (Debian's coturn, on loopback) allocates each session a relay
candidate with the configured credentials; refused credentials are logged and the session streams
on its host candidates; malformed URLs and TURN without credentials are refused at start.

On loopback the viewer reaches the server's host candidate either way: what is tested is what the
credentials decide, the relay allocation that a viewer behind a firewall would need."""

import logging
import socket
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from splatcast.streaming.server import ServerConfig, create_app

from .debian_packages import ensure_installed
from .test_streaming import figure_cloud, streaming_viewer

TURN_SERVER = Path("/usr/bin/turnserver")
USER, PASSWORD = "splatcast", "s3cret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def turn_url(tmp_path_factory):
    """coturn on 127.0.0.1 with one long-term user, relaying from 127.0.0.1."""
    binary = ensure_installed(TURN_SERVER, "coturn")
    port, db = free_port(), tmp_path_factory.mktemp("turn") / "turndb"
    command = [str(binary), "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "127.0.0.1", "--listening-port", str(port),
               "--relay-ip", "127.0.0.1", "--lt-cred-mech", "--user", f"{USER}:{PASSWORD}", "--realm", "splatcast.test",
               "--userdb", str(db), "--log-file", "stdout", "--simple-log"]
    turn = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:  # it listens on TCP beside UDP: a connection says it is up
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if turn.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"turnserver did not start (exit {turn.poll()})")
                time.sleep(0.1)
        yield f"turn:127.0.0.1:{port}"
    finally:
        turn.kill()
        turn.wait()


def relay_candidates(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate:") and " typ relay " in line]


@pytest.mark.parametrize("password", [PASSWORD, "wrong"])
async def test_sessions_get_a_relay_candidate_only_with_the_right_turn_credentials(turn_url, caplog, password):
    config = ServerConfig(fps=30, width=64, height=48, ice_servers=[turn_url], turn_username=USER, turn_credential=password)
    async with TestServer(create_app({"figure": figure_cloud(300)}, config), host="127.0.0.1") as server:
        with caplog.at_level(logging.WARNING, logger="splatcast.streaming.server"):
            viewer, session, _ = await streaming_viewer(server, frames=3)  # streams either way (host candidates on loopback)
        relays = relay_candidates(session.pc.localDescription.sdp)
        refused = [r for r in caplog.records if "gave no relay candidate" in r.getMessage()]
        if password == PASSWORD:
            assert relays and all(" 127.0.0.1 " in line for line in relays) and not refused
        else:
            assert not relays and len(refused) == 1
        await viewer.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ice_servers": ["relay.example.org:3478"]}, "malformed uri: invalid scheme"),
        ({"ice_servers": ["stun:stun.example.org:3478?transport=tcp"]}, "stun must not contain transport"),
        ({"ice_servers": ["turn:turn.example.org"]}, "needs a username and a credential"),
        ({"ice_servers": ["turns:turn.example.org"], "turn_username": USER}, "needs a username and a credential"),
    ],
)
def test_bad_ice_server_settings_are_refused_at_start(settings, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(**settings)

