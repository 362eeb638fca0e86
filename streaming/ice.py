"""ICE servers for the server's own peer connections and for its viewers' browsers.

STUN gives a peer its address outside a NAT (a server-reflexive candidate); TURN relays for a peer
that cannot be reached directly (a relay candidate). TURN needs credentials, of one of two kinds:

- long-term ones, a username and password: used by the server's own connections only, since
  handed to browsers they would be anyone's for good;
- a secret shared with the TURN server, from which credentials that expire are minted for the
  server and for each viewer that asks (``POST /ice``): the "TURN REST API" scheme
  (draft-uberti-behave-turn-rest) that coturn implements as ``use-auth-secret``. The username is
  ``<expiry unix time>:<label>``, the password base64(HMAC-SHA1(secret, username)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri

CREDENTIAL_LIFETIME_S = 12 * 3600
"""How long a minted TURN credential lasts: a TURN server refuses the allocation's refreshes
once it has expired, so it must outlast a viewing session."""
TURN_RETRY_S = 60.0
"""After a session got no relay, how long the next sessions go without TURN: a TURN server that
cannot be reached costs each answer aioice's 5 s gathering timeout."""


def turn_rest_credential(secret: str, label: str, expires: int) -> tuple[str, str]:
    """(username, password) that a TURN server sharing ``secret`` accepts until ``expires``."""
    username = f"{expires}:{label}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@dataclass(frozen=True)
class IceServers:
    """The server's ICE settings, checked: what its own peer connections and its viewers take."""

    urls: tuple[str, ...] = ()
    """STUN/TURN URLs; aiortc uses the first of each kind."""
    turn_username: str | None = None
    turn_credential: str | None = None
    turn_secret: str | None = None

    def __post_init__(self) -> None:
        """Every URL is checked by aiortc's own parser and TURN has credentials of one kind: at
        start-up, where a mistake is one error, not a failure of each viewer's offer."""
        for url in self.urls:
            try:
                parse_stun_turn_uri(url)
            except ValueError as error:
                raise ValueError(f"ICE server {url!r}: {error} (expected stun:HOST[:PORT] or turn:HOST[:PORT][?transport=udp|tcp])") from None
        long_term = self.turn_username is not None or self.turn_credential is not None
        if self.turn_secret is not None and long_term:
            raise ValueError("give TURN either a shared secret or a username and credential, not both")
        for url in self.turn_urls:
            if self.turn_secret is None and not (self.turn_username and self.turn_credential):
                raise ValueError(f"TURN server {url!r} needs a shared secret, or a username and a credential")

    @property
    def turn_urls(self) -> tuple[str, ...]:
        return tuple(url for url in self.urls if url.startswith("turn"))

    @property
    def stun_urls(self) -> tuple[str, ...]:
        return tuple(url for url in self.urls if url.startswith("stun"))

    def __str__(self) -> str:
        if not self.urls:
            return "none (host candidates only)"
        parts = [f"STUN {', '.join(self.stun_urls)}"] if self.stun_urls else []
        if self.turn_urls:
            who = "credentials minted from the shared secret, for the server and its viewers" if self.turn_secret else "long-term credentials, the server's only"
            parts.append(f"TURN {', '.join(self.turn_urls)} ({who})")
        return "; ".join(parts)

    def _turn_login(self, label: str) -> tuple[str, str, int | None]:
        """(username, password, expiry or None) for a TURN allocation."""
        if self.turn_secret is None:
            return self.turn_username, self.turn_credential, None
        expires = int(time.time() + CREDENTIAL_LIFETIME_S)
        return (*turn_rest_credential(self.turn_secret, label, expires), expires)

    def for_server(self, turn: bool = True) -> RTCConfiguration:
        """One session's configuration (minted credentials are fresh for each); ``turn`` False
        leaves the TURN servers out (``TurnBackoff``)."""
        servers = [RTCIceServer(url) for url in self.stun_urls]
        if self.turn_urls and turn:
            username, password, _ = self._turn_login("splatcast-server")
            servers += [RTCIceServer(url, username=username, credential=password) for url in self.turn_urls]
        return RTCConfiguration(iceServers=servers)

    def for_viewer(self, label: str) -> dict:
        """What a browser's ``RTCPeerConnection`` takes as ``iceServers``, and when its TURN
        credentials expire: STUN always, TURN only with a shared secret (long-term credentials
        stay on the server)."""
        servers = [{"urls": list(self.stun_urls)}] if self.stun_urls else []
        expires = None
        if self.turn_urls and self.turn_secret is not None:
            username, password, expires = self._turn_login(label)
            servers.append({"urls": list(self.turn_urls), "username": username, "credential": password})
        return {"iceServers": servers, "expires": expires}


class TurnBackoff:
    """Whether the server's next session asks the TURN server for a relay: not for ``retry_s``
    after a session got none, so that a TURN server that is down or refuses the credentials
    costs one session the gathering timeout per ``retry_s``, not every session."""

    def __init__(self, retry_s: float = TURN_RETRY_S) -> None:
        self.retry_s = retry_s
        self._skip_until = 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self._skip_until

    def record(self, relayed: bool) -> None:
        self._skip_until = 0.0 if relayed else time.monotonic() + self.retry_s


def viewer_ice_servers(answer: dict) -> list[RTCIceServer]:
    """``POST /ice``'s answer as aiortc takes it: a Python viewer's side of ``for_viewer``."""
    return [RTCIceServer(server["urls"], username=server.get("username"), credential=server.get("credential")) for server in answer["iceServers"]]
