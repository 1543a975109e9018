"""Admin routes (an admin key required): list, create and revoke API keys over HTTP."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deepfleet.gateway.auth import Authenticator, AuthError
from deepfleet.gateway.errors import error_response
from deepfleet.gateway.keys import ApiKey, KeyStore
from deepfleet.gateway.requests import TOO_DEEP


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
    def __init__(self, keys: KeyStore, auth: Authenticator) -> None:
        self._keys = keys
        self._auth = auth

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
        return self._check(request) or JSONResponse(
            {"data": [key_json(k) for k in self._keys.all()]}
        )

    async def create_key(self, request: Request) -> Response:
        denied = self._check(request)
        if denied:
            return denied
        try:
            spec = msgspec.json.decode(await request.body(), type=NewKey)
        except msgspec.DecodeError as exc:
            return error_response(400, f"invalid key request: {exc}", code="invalid_value")
        except RecursionError:
            return error_response(400, f"invalid key request: {TOO_DEEP}", code="invalid_json")
        key, secret = self._keys.create(
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
        revoked = self._keys.revoke(request.path_params["key_id"])
        if not revoked:
            return error_response(404, "no live key with that id or name", code="not_found")
        return JSONResponse({"revoked": [k.id for k in revoked]})
