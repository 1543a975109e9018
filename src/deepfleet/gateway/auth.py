"""Who is calling: the bearer key checked against the key store on every /v1 request.

The store is re-read only when its database changed (`KeyRecords.version()`, checked on every
request), so a key revoked from the CLI, the admin routes or another worker is refused by
every worker at its next request.

A key is found by the SHA-256 of the presented secret (a dict lookup): comparing digests of
the caller's own guesses tells nothing about a stored secret, so no constant-time compare is
needed there. Shared tokens compared as given (the metrics token) go through `bearer_is`,
which uses `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from deepfleet.gateway.keys import ApiKey, hash_secret
from deepfleet.gateway.store.base import KeyRecords


@dataclass(frozen=True)
class Principal:
    key: ApiKey | None  # None: no keys exist, the gateway is open (and loopback-only)

    @property
    def name(self) -> str:
        return self.key.name if self.key else "anonymous"


OPEN = Principal(None)


@dataclass(frozen=True)
class AuthError:
    status: int
    message: str
    code: str


def bearer_is(authorization: str | None, token: str) -> bool:
    """Whether the header is `Bearer <token>`, compared in constant time."""
    return hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())


class Authenticator:
    def __init__(self, store: KeyRecords, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._version: object = -1
        self._keys: dict[str, ApiKey] = {}

    def _refresh(self) -> None:
        version = self._store.version()
        if version != self._version:
            self._keys = self._store.by_hash()
            self._version = version

    @property
    def required(self) -> bool:
        self._refresh()
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> Principal | AuthError:
        self._refresh()
        if not self._keys:
            return OPEN
        if not authorization or not authorization.lower().startswith("bearer "):
            return AuthError(
                401, "missing API key: send `Authorization: Bearer <key>`", "missing_api_key"
            )
        key = self._keys.get(hash_secret(authorization[7:].strip()))
        if key is None:
            return AuthError(401, "invalid API key", "invalid_api_key")
        problem = key.usable(self._clock())
        if problem:
            return AuthError(401, problem, "invalid_api_key")
        return Principal(key)

    def admin(self, authorization: str | None) -> Principal | AuthError:
        who = self.authenticate(authorization)
        if isinstance(who, AuthError):
            return who
        if who.key is None or not who.key.admin:
            return AuthError(403, "this route needs an admin key", "admin_required")
        return who
