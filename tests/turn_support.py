"""A real TURN server for the tests: Debian's coturn on 127.0.0.1, with long-term users or a
shared secret (its TURN REST API mode), relaying from 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import unused_port

from .debian_packages import ensure_installed

TURN_SERVER = Path("/usr/bin/turnserver")
REALM = "splatcast.test"


def long_term_user(username: str, password: str) -> list[str]:
    return ["--lt-cred-mech", "--user", f"{username}:{password}"]


def shared_secret(secret: str) -> list[str]:
    return ["--use-auth-secret", "--static-auth-secret", secret]


@contextmanager
def turn_server(auth: list[str], folder: Path) -> Iterator[str]:
    """coturn with ``auth`` (``long_term_user`` or ``shared_secret``) for the block; yields its
    ``turn:`` URL. Loopback peers are allowed: the browser's relay reaches the server on 127.0.0.1."""
    binary = ensure_installed(TURN_SERVER, "coturn")
    port = unused_port()
    command = [str(binary), "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "127.0.0.1", "--listening-port", str(port),
               "--relay-ip", "127.0.0.1", "--allow-loopback-peers", "--realm", REALM, "--userdb", str(folder / "turndb"), *auth]
    turn = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:  # it listens on TCP beside UDP: a connection says it is up
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if turn.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"turnserver did not start (exit status {turn.poll()})")
                time.sleep(0.1)
        yield f"turn:127.0.0.1:{port}"
    finally:
        turn.kill()
        turn.wait()


def relay_candidates(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate:") and " typ relay " in line]
