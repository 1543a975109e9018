"""Build the state backend that gateway.state names, from a registry by name (no branches on
the backend elsewhere): SQLite files beside the gateway, or one PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepfleet.config.state import StateSpec
from deepfleet.gateway.store.base import KeyRecords, Limits


@dataclass(frozen=True)
class State:
    keys: KeyRecords
    limits: Limits

    def close(self) -> None:
        self.keys.close()
        self.limits.close()


def usage_db_path(keys_db: Path) -> Path:
    """The SQLite usage file beside keys.db (keys-usage.db)."""
    return keys_db.with_name(keys_db.stem + "-usage.db")


def _sqlite(spec: StateSpec, keys_db: Path) -> State:
    from deepfleet.gateway.keys import KeyStore
    from deepfleet.gateway.limits import TokenBuckets

    return State(KeyStore(keys_db), TokenBuckets(usage_db_path(keys_db)))


def _postgres(spec: StateSpec, keys_db: Path) -> State:
    from deepfleet.gateway.store.postgres_keys import PostgresKeys
    from deepfleet.gateway.store.postgres_limits import PostgresLimits

    dsn = spec.resolve_dsn()
    return State(PostgresKeys(dsn), PostgresLimits(dsn, spec.pool_size))


BACKENDS: dict[str, Callable[[StateSpec, Path], State]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


def open_state(spec: StateSpec, keys_db: Path) -> State:
    """The backend `spec` names; `keys_db` is the SQLite file (used by the sqlite backend).
    Raises config.state.StateError (the message names the field) when it cannot be opened."""
    return BACKENDS[spec.backend](spec, keys_db)


def has_keys(spec: StateSpec, keys_db: Path) -> bool:
    """Whether the backend holds any API key (a gateway binds beyond loopback only then).
    Raises StateError as open_state does."""
    state = open_state(spec, keys_db)
    try:
        return bool(state.keys.all())
    finally:
        state.close()
