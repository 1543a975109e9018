"""The state backend's contract: what the gateway and the CLI may ask of keys and limits.

Two implementations: SQLite (keys.py, limits.py: files beside the gateway, one host) and
PostgreSQL (postgres_keys.py, postgres_limits.py: one database for every gateway). Both keep
the same meaning:

- `KeyRecords` is called synchronously. The CLI and the admin routes (from a thread) create,
  list and revoke; a gateway calls `version()` and `by_hash()` on every request, so those two
  must answer from memory or a file read, never a network round trip (PostgreSQL keeps a
  snapshot that a background task refreshes).
- `Limits` is what admission asks per request. `take` and `enter` are awaited: SQLite answers
  without suspending, PostgreSQL from this gateway's lease or, when it ran out, with one round
  trip (leases.py). `settle`, `leave` and `record` return at once; whatever they write runs in
  the background and `stop()` waits for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from deepfleet.gateway.keys import ApiKey


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    unavailable: bool = False  # the state database did not answer: refused, not counted


@dataclass(frozen=True)
class UsageRow:
    """One line of the usage ledger: a key's requests and tokens for a model in one hour."""

    key_id: str
    model: str
    hour: int  # hours since the Unix epoch (UTC)
    requests: int
    prompt_tokens: int
    completion_tokens: int


class KeyRecords(Protocol):
    def create(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrent: int | None = None,
        reasoning_cap: int | None = None,
        models: tuple[str, ...] = (),
        expires_at: float | None = None,
        admin: bool = False,
    ) -> tuple[ApiKey, str]: ...

    def all(self) -> list[ApiKey]: ...

    def by_hash(self) -> dict[str, ApiKey]: ...

    def revoke(self, id_or_name: str) -> list[ApiKey]: ...

    def version(self) -> object:
        """Changes with every change of the keys, from any writer; cheap (no network)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def close(self) -> None: ...


class Limits(Protocol):
    async def take(
        self, key_id: str, kind: str, capacity: int, cost: float, need: float
    ) -> Verdict:
        """Debit `cost` from the key's `kind` bucket (refilling at capacity per minute) if it
        holds at least `need`."""
        ...

    def settle(self, key_id: str, kind: str, capacity: int, tokens: float) -> None:
        """Debit `tokens` more (a refund when negative), whatever the level."""
        ...

    async def enter(self, key_id: str, limit: int | None) -> bool:
        """Take one of the key's `limit` concurrent slots; False when all are taken."""
        ...

    def leave(self, key_id: str, limit: int | None) -> None: ...

    def record(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Add one finished request to the usage ledger."""
        ...

    def record_durably(
        self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int
    ) -> asyncio.Future[None] | None:
        """`record`, and a future done once the line is committed (None: it is already, or the
        database is out and the line is queued for retry). The gateway awaits it before a
        request's last bytes leave, so an answer a client got whole is in the ledger even if
        its gateway is SIGKILLed the next moment."""
        ...

    def usage(self) -> list[UsageRow]:
        """The whole ledger (for the CLI and tests: a synchronous read)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def close(self) -> None: ...
