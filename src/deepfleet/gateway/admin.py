"""Admin routes (an admin key required): list, create and revoke API keys over HTTP.

A key request is a few hundred bytes of JSON. Its body is bounded like the public API's
(MAX_BODY_BYTES, 413 `request_too_large` in the OpenAI envelope): refused from Content-Length
before anything is read, and cut off while reading when it was not declared (chunked), so no
request, even one with a stolen or leaked admin key, holds gigabytes of the gateway's memory.

The key store is synchronous (a PostgreSQL backend makes a network round trip), so its calls
run in a thread, off the event loop that serves the streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deepfleet.gateway.auth import Authenticator, AuthError
from deepfleet.gateway.errors import error_response
from deepfleet.gateway.keys import ApiKey
from deepfleet.gateway.requests import TOO_DEEP
from deepfleet.gateway.store.base import KeyRecords

MAX_BODY_BYTES = 64 * 1024
"""Largest admin request body (a key spec with a long model list fits many times over)."""


class TooLarge(Exception):
    pass


async def bounded_body(request: Request, limit: int) -> bytes:
    """The body, or TooLarge as soon as it is declared or read past `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        parts.append(chunk)
    return b"".join(parts)


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    reasoning_cap: int | None = None
    models: list[str] = []
    expires_at: float | None = None
    admin: bool = False


def key_json(key: ApiKey) -> dict[str, Any]:
    return {**dataclasses.asdict(key), "models": list(key.models)}


class AdminRoutes:
    def __init__(
        self, keys: KeyRecords, auth: Authenticator, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self._keys = keys
        self._auth = auth
        self._max_body = max_body_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/admin/keys", self.list_keys, methods=["GET"]),
            Route("/admin/keys", self.create_key, methods=["POST"]),
            Route("/admin/keys/{key_id}", self.revoke_key, methods=["DELETE"]),
        ]

    def _check(self, request: Request) -> Response | None:
        who = self._auth.admin(request.headers.get("authorization"))
        if isinstance(who, AuthError):
            return error_response(who.status, who.message, code=who.code)
        return None

    async def list_keys(self, request: Request) -> Response:
        denied = self._check(request)
        if denied:
            return denied
        keys = await asyncio.to_thread(self._keys.all)
        return JSONResponse({"data": [key_json(k) for k in keys]})

    async def create_key(self, request: Request) -> Response:
        denied = self._check(request)
        if denied:
            return denied
        try:
            spec = msgspec.json.decode(await bounded_body(request, self._max_body), type=NewKey)
        except TooLarge:
            return error_response(
                413, f"request body is over {self._max_body} bytes", code="request_too_large"
            )
        except msgspec.DecodeError as exc:
            return error_response(400, f"invalid key request: {exc}", code="invalid_value")
        except RecursionError:
            return error_response(400, f"invalid key request: {TOO_DEEP}", code="invalid_json")
        key, secret = await asyncio.to_thread(
            self._keys.create,
            spec.name,
            rpm=spec.rpm,
            tpm=spec.tpm,
            max_concurrent=spec.max_concurrent,
            reasoning_cap=spec.reasoning_cap,
            models=tuple(spec.models),
            expires_at=spec.expires_at,
            admin=spec.admin,
        )
        return JSONResponse({"key": key_json(key), "secret": secret}, status_code=201)

    async def revoke_key(self, request: Request) -> Response:
        denied = self._check(request)
        if denied:
            return denied
        revoked = await asyncio.to_thread(self._keys.revoke, request.path_params["key_id"])
        if not revoked:
            return error_response(404, "no live key with that id or name", code="not_found")
        return JSONResponse({"revoked": [k.id for k in revoked]})
