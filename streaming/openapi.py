"""The OpenAPI 3 description of the server's HTTP API, served at ``/openapi.json``."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _avatar_id() -> dict:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}


@cache
def openapi_spec() -> dict:
    try:
        api_version = version("splatcast")
    except PackageNotFoundError:
        api_version = "0"
    record = {"$ref": "#/components/schemas/Avatar"}
    manager = [{"apiKey": []}]
    viewer_refusals = {  # what /ice and /offer answer a viewer they do not admit
        "401": _error("missing, invalid or expired viewer token"),
        "403": _error("token for another avatar"),
        "404": _error("unknown avatar"),
    }
    upload_body = {
        "required": True,
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "splatcast",
            "version": api_version,
            "description": "Upload a photo or a Gaussian asset, get an avatar, stream it over WebRTC. "
            "With an API key configured, management calls need `Authorization: Bearer <key>`, and /ice and /offer need a viewer token.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                "Avatar": {
                    "type": "object",
                    "required": ["id", "status", "created", "updated"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"type": "string", "enum": ["queued", "running", "ready", "failed"]},
                        "stage": {"type": "string", "nullable": True},
                        "reason": {"type": "string", "nullable": True},
                        "gaussians": {"type": "integer", "nullable": True},
                        "created": {"type": "number"},
                        "updated": {"type": "number"},
                        "job": {"type": "string"},
                    },
                },
                "Offer": {
                    "type": "object",
                    "required": ["sdp", "type"],
                    "properties": {
                        "sdp": {"type": "string"},
                        "type": {"type": "string", "enum": ["offer"]},
                        "avatar": {"type": "string"},
                        "token": {"type": "string"},
                    },
                },
                "Viewer": {"type": "object", "properties": {"avatar": {"type": "string"}, "token": {"type": "string"}}},
                "IceServers": {
                    "type": "object",
                    "required": ["iceServers", "expires"],
                    "properties": {
                        "iceServers": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["urls"],
                                "properties": {"urls": {"type": "array", "items": {"type": "string"}}, "username": {"type": "string"}, "credential": {"type": "string"}},
                            },
                        },
                        "expires": {"type": "integer", "nullable": True, "description": "unix time the TURN credentials expire; null without any"},
                    },
                },
                "Answer": {
                    "type": "object",
                    "required": ["sdp", "type", "session"],
                    "properties": {"sdp": {"type": "string"}, "type": {"type": "string"}, "session": {"type": "string"}},
                },
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness and session count", "responses": {"200": {"description": "ok"}}}},
            "/scene": {
                "get": {
                    "summary": "Default orbit of an avatar and the stream's default size",
                    "parameters": [{"name": "avatar", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "scene"}, "404": _error("unknown avatar")},
                }
            },
            "/ice": {
                "post": {
                    "summary": "ICE servers for a viewer's RTCPeerConnection; TURN credentials minted for it, expiring",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Viewer"}}}},
                    "responses": {
                        "200": {"description": "iceServers", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IceServers"}}}},
                        "400": _error("malformed JSON"),
                        **viewer_refusals,
                    },
                }
            },
            "/offer": {
                "post": {
                    "summary": "Start a WebRTC session (SDP offer in, answer out)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Offer"}}}},
                    "responses": {
                        "200": {"description": "answer", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}},
                        "400": _error("malformed JSON or SDP"),
                        **viewer_refusals,
                        "413": _error("SDP too large"),
                        "429": _error("too many sessions for this token or address"),
                        "503": _error("server at its session limit"),
                    },
                }
            },
            "/avatars": {
                "post": {
                    "summary": "Upload a photo (reconstructed in the background) or a .ply/.splat asset (ready at once)",
                    "security": manager,
                    "requestBody": upload_body,
                    "responses": {
                        "201": {"description": "asset stored and ready", "content": {"application/json": {"schema": record}}},
                        "202": {"description": "photo accepted; follow the job", "content": {"application/json": {"schema": record}}},
                        "400": _error("empty upload or unusable asset"),
                        "401": _error("missing or wrong API key"),
                        "413": _error("body or image too large"),
                        "415": _error("neither a photo nor a Gaussian asset"),
                        "429": _error("reconstruction queue full"),
                    },
                },
                "get": {
                    "summary": "Every avatar",
                    "security": manager,
                    "responses": {"200": {"description": "list", "content": {"application/json": {"schema": {"type": "array", "items": record}}}}, "401": _error("missing or wrong API key")},
                },
            },
            "/avatars/{id}": {
                "parameters": [_avatar_id()],
                "get": {
                    "summary": "An avatar's status (queued, running with stage, ready, failed with reason)",
                    "security": manager,
                    "responses": {"200": {"description": "record", "content": {"application/json": {"schema": record}}}, "401": _error("missing or wrong API key"), "404": _error("no such avatar")},
                },
                "delete": {
                    "summary": "Delete an avatar and disconnect its viewers",
                    "security": manager,
                    "responses": {"204": {"description": "deleted"}, "401": _error("missing or wrong API key"), "404": _error("no such avatar")},
                },
            },
            "/avatars/{id}/ply": {
                "parameters": [_avatar_id()],
                "get": {
                    "summary": "Download the avatar as an INRIA 3DGS PLY",
                    "security": manager,
                    "responses": {
                        "200": {"description": "the asset", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                        "401": _error("missing or wrong API key"),
                        "404": _error("no such avatar"),
                        "409": _error("not ready"),
                    },
                },
            },
            "/avatars/{id}/tokens": {
                "parameters": [_avatar_id()],
                "post": {
                    "summary": "Mint a short-lived viewer token for /offer",
                    "security": manager,
                    "responses": {
                        "200": {"description": "token", "content": {"application/json": {"schema": {"type": "object", "properties": {"token": {"type": "string"}, "expires": {"type": "number"}, "avatar": {"type": "string"}}}}}},
                        "401": _error("missing or wrong API key"),
                        "404": _error("no such avatar"),
                        "409": _error("not ready"),
                    },
                },
            },
        },
    }
