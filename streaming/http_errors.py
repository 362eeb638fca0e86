"""Every HTTP error leaves the server as ``{"error": message}`` JSON."""

from __future__ import annotations

from aiohttp import web


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Turns raised ``web.HTTPException``s (ours and aiohttp's own 404, 405, 413 ...) into JSON,
    so handlers can simply ``raise web.HTTPNotFound(text=message)``."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400 or error.content_type == "application/json":
            raise
        return error_response(error.status, error.text or error.reason)
