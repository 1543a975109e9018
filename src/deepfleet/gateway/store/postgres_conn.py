"""Connecting to the PostgreSQL state database: one place that turns a DSN into a connection,
applies the schema's migrations, and words a failure without the password."""

from __future__ import annotations

from typing import Any

import psycopg

from deepfleet.config.state import StateError, redact
from deepfleet.gateway.store.postgres_schema import migrate

CONNECT_TIMEOUT_S = 5


def connect(dsn: str, **session: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A synchronous autocommit connection with the schema migrated; StateError on failure."""
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="deepfleet"
        )
    except psycopg.Error as exc:
        raise StateError(f"cannot connect to {redact(dsn)}: {first_line(exc)}") from None
    try:
        migrate(conn)
    except (psycopg.Error, RuntimeError) as exc:
        conn.close()
        raise StateError(f"{redact(dsn)}: schema migration failed: {first_line(exc)}") from None
    return conn


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
