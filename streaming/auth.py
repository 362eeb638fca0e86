"""Who may manage avatars and who may watch one.

Off by default (the local demo). With an API key configured, management calls need
``Authorization: Bearer <api key>``, and ``/offer`` needs a viewer token that the management API
mints: ``<payload>.<signature>``, where the payload (base64url JSON) names the avatar, an expiry and
a random token id, and the signature is HMAC-SHA256 over the payload with a key derived from the
API key. Tokens are checked in constant time and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from .http_errors import RequestRefused


class AuthError(RequestRefused):
    """Refused: ``status`` is 401 (no or bad credentials) or 403 (valid, but not for this)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ViewerToken:
    avatar_id: str
    expires: float
    token_id: str


class Authority:
    def __init__(self, api_key: str | None, token_ttl_s: float = 600.0) -> None:
        self.enabled = api_key is not None
        self._api_key = (api_key or "").encode()
        self._signing_key = hmac.new(self._api_key, b"splatcast viewer tokens v1", hashlib.sha256).digest()
        self.token_ttl_s = token_ttl_s

    def check_manager(self, authorization: str | None) -> None:
        if not self.enabled:
            return
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), self._api_key):
            raise AuthError(401, "management calls need 'Authorization: Bearer <api key>'")

    def mint(self, avatar_id: str, ttl_s: float | None = None) -> tuple[str, float]:
        expires = time.time() + (ttl_s or self.token_ttl_s)
        payload = _b64(json.dumps({"a": avatar_id, "e": expires, "n": secrets.token_hex(8)}).encode())
        return f"{payload}.{self._sign(payload)}", expires

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._signing_key, payload.encode(), hashlib.sha256).digest())

    def check_viewer(self, token: object, avatar_id: str) -> ViewerToken | None:
        """The token's claims if it admits a viewer of ``avatar_id``; None when auth is off."""
        if not self.enabled:
            return None
        if not isinstance(token, str) or token.count(".") != 1:
            raise AuthError(401, "a viewer token is required")
        payload, signature = token.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise AuthError(401, "invalid viewer token")
        claims = json.loads(_unb64(payload))
        if claims["e"] < time.time():
            raise AuthError(401, "viewer token expired")
        if claims["a"] != avatar_id:
            raise AuthError(403, "this token is for another avatar")
        return ViewerToken(claims["a"], claims["e"], claims["n"])
