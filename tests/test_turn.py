"""ICE servers against a real TURN server (Debian's coturn, on loopback): the server's sessions get
a relay candidate with the right long-term credentials or shared secret, and log the refusal
otherwise; ``POST /ice`` mints a viewer credentials that the TURN server accepts (the Python
viewer gathers a relay candidate with them), only for a viewer the server admits; malformed URLs and TURN without credentials are refused at start.

On loopback the viewer reaches the server's host candidate either way: what is tested here is what
the credentials decide, the relay allocation that a peer behind a firewall needs (the browser test
streams through the relay alone)."""

import asyncio
import base64
import hashlib
import hmac
import logging
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from splatcast.streaming.ice import CREDENTIAL_LIFETIME_S, viewer_ice_servers
from splatcast.streaming.server import SERVER_KEY, ServerConfig, create_app
from splatcast.streaming.viewer import Viewer

from .test_api import API_KEY
from .test_streaming import base_url, figure_cloud, streaming_viewer
from .turn_support import long_term_user, relay_candidates, shared_secret, turn_server

USER, PASSWORD, SECRET = "splatcast", "s3cret", "shared-s3cret"


@pytest.fixture(scope="module")
def long_term_turn(tmp_path_factory):
    with turn_server(long_term_user(USER, PASSWORD), tmp_path_factory.mktemp("turn-users")) as url:
        yield url


@pytest.fixture(scope="module")
def secret_turn(tmp_path_factory):
    with turn_server(shared_secret(SECRET), tmp_path_factory.mktemp("turn-secret")) as url:
        yield url


def serving(**settings) -> TestServer:
    config = ServerConfig(fps=30, width=64, height=48, **settings)
    return TestServer(create_app({"figure": figure_cloud(300)}, config), host="127.0.0.1")


async def server_relays(server, caplog) -> tuple[list[str], int]:
    """A viewer's session: the relay candidates of the server's answer, and the warnings that it had none."""
    with caplog.at_level(logging.WARNING, logger="splatcast.streaming.server"):
        viewer, session, _ = await streaming_viewer(server, frames=3)  # it streams either way (host candidates)
    await viewer.close()
    warnings = sum("gave no relay candidate" in r.getMessage() for r in caplog.records)
    return relay_candidates(session.pc.localDescription.sdp), warnings


@pytest.mark.parametrize("password", [PASSWORD, "wrong"])
async def test_long_term_credentials_get_the_server_a_relay_candidate_only_when_right(long_term_turn, caplog, password):
    async with serving(ice_servers=[long_term_turn], turn_username=USER, turn_credential=password) as server:
        relays, warnings = await server_relays(server, caplog)
    if password == PASSWORD:
        assert relays and all(" 127.0.0.1 " in line for line in relays) and warnings == 0
    else:
        assert not relays and warnings == 1


@pytest.mark.parametrize("secret", [SECRET, "wrong"])
async def test_a_shared_secret_mints_the_server_credentials_the_turn_server_accepts(secret_turn, caplog, secret):
    async with serving(ice_servers=[secret_turn], turn_secret=secret) as server:
        relays, warnings = await server_relays(server, caplog)
    assert (bool(relays), warnings) == ((True, 0) if secret == SECRET else (False, 1))


async def test_after_a_session_gets_no_relay_the_next_go_without_turn_until_the_retry(secret_turn, caplog):
    """A TURN server that refuses (here) or cannot be reached (aioice's 5 s gathering timeout each
    answer) is asked again only after the retry time, not by every session."""
    async with serving(ice_servers=[secret_turn], turn_secret="wrong") as server:
        backoff = server.app[SERVER_KEY].turn_backoff
        backoff.retry_s = 3.0
        for tries_turn in (True, False):
            caplog.clear()
            relays, warnings = await server_relays(server, caplog)
            assert not relays and warnings == int(tries_turn) and not backoff.allows()
        await asyncio.sleep(3.1)
        caplog.clear()
        assert await server_relays(server, caplog) == ([], 1)  # asked again, refused again
        async with aiohttp.ClientSession() as http, http.get(f"{base_url(server)}/metrics") as response:
            assert "splatcast_sessions_without_relay_total 2.0" in await response.text()


async def viewer_relays(server, ice: dict, **offer) -> list[str]:
    """The relay candidates of the project's Python viewer, configured with ``ice`` (an answer of
    ``POST /ice``), in the offer of a session it then streams."""
    viewer = Viewer(ice_servers=viewer_ice_servers(ice))
    try:
        await viewer.connect(base_url(server), **offer)
        return relay_candidates(viewer.pc.localDescription.sdp)
    finally:
        await viewer.close()


async def test_viewers_get_minted_turn_credentials_that_the_turn_server_accepts(secret_turn):
    stun = secret_turn.replace("turn:", "stun:")  # coturn answers STUN too
    async with serving(ice_servers=[stun, secret_turn], turn_secret=SECRET) as server, aiohttp.ClientSession() as http:
        async with http.post(f"{base_url(server)}/ice", json={}) as response:
            assert response.status == 200
            ice = await response.json()
        assert [s["urls"] for s in ice["iceServers"]] == [[stun], [secret_turn]]
        turn = ice["iceServers"][1]
        expires, label = turn["username"].split(":", 1)
        assert int(expires) == ice["expires"] and abs(ice["expires"] - time.time() - CREDENTIAL_LIFETIME_S) < 60
        assert label.startswith("figure-")
        assert turn["credential"] == base64.b64encode(hmac.new(SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()).decode()
        assert await viewer_relays(server, ice)


async def test_long_term_credentials_never_reach_viewers(long_term_turn):
    async with serving(ice_servers=[long_term_turn], turn_username=USER, turn_credential=PASSWORD) as server, aiohttp.ClientSession() as http:
        async with http.post(f"{base_url(server)}/ice", json={"avatar": "figure"}) as response:
            assert await response.json() == {"iceServers": [], "expires": None}


async def test_turn_credentials_go_only_to_viewers_the_server_admits(secret_turn):
    async with serving(ice_servers=[secret_turn], turn_secret=SECRET, api_key=API_KEY) as server, aiohttp.ClientSession() as http:
        url = base_url(server)
        for body, status in [({}, 401), ({"token": "forged.token"}, 401), ({"avatar": "nobody"}, 404), ([1, 2], 400)]:
            async with http.post(f"{url}/ice", json=body) as response:
                assert response.status == status, (body, await response.text())
                assert "error" in await response.json()
        token, _ = server.app[SERVER_KEY].authority.mint("figure")  # what POST /avatars/{id}/tokens hands out
        async with http.post(f"{url}/ice", json={"avatar": "figure", "token": token}) as response:
            assert response.status == 200
            ice = await response.json()
        assert await viewer_relays(server, ice, avatar="figure", token=token)


def test_the_ice_settings_read_as_what_they_do():
    assert str(ServerConfig().ice()) == "none (host candidates only)"
    shared = ServerConfig(ice_servers=["stun:a.example:3478", "turn:b.example:3478"], turn_secret=SECRET).ice()
    assert str(shared) == "STUN stun:a.example:3478; TURN turn:b.example:3478 (credentials minted from the shared secret, for the server and its viewers)"
    long_term = ServerConfig(ice_servers=["turn:b.example:3478"], turn_username=USER, turn_credential=PASSWORD).ice()
    assert str(long_term) == "TURN turn:b.example:3478 (long-term credentials, the server's only)" and PASSWORD not in str(long_term)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ice_servers": ["relay.example.org:3478"]}, "malformed uri: invalid scheme"),
        ({"ice_servers": ["stun:stun.example.org:3478?transport=tcp"]}, "stun must not contain transport"),
        ({"ice_servers": ["turn:turn.example.org"]}, "needs a shared secret, or a username and a credential"),
        ({"ice_servers": ["turns:turn.example.org"], "turn_username": USER}, "needs a shared secret, or a username and a credential"),
        ({"turn_secret": SECRET, "turn_username": USER, "turn_credential": PASSWORD}, "either a shared secret or a username and credential"),
    ],
)
def test_bad_ice_server_settings_are_refused_at_start(settings, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(**settings)
