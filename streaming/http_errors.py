"""Every HTTP error leaves the server as ``{"error": message}`` JSON."""

from __future__ import annotations

from aiohttp import web


class RequestRefused(Exception):
    """A refusal the client can act on (bad credentials, too many sessions ...), answered with
    ``status`` by ``json_errors``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Turns raised ``web.HTTPException``s (ours and aiohttp's own 404, 405, 413 ...) and
    ``RequestRefused`` into JSON, so handlers can simply ``raise web.HTTPNotFound(text=message)``."""
    try:
        return await handler(request)
    except RequestRefused as error:
        return error_response(error.status, str(error))
    except web.HTTPException as error:
        if error.status < 400 or error.content_type == "application/json":
            raise
        return error_response(error.status, error.text or error.reason)
