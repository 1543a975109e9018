"""`deepfleet keys create | list | revoke`: API keys for the gateway, stored hashed, in the
state backend gateway.state names (SQLite keys.db, or PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from deepfleet.cli.common import FILE_OPT, STATE_OPT, fail, load_config, out, resolve_state_dir
from deepfleet.config import default_config
from deepfleet.config.state import StateError
from deepfleet.fleet.controller import keys_db_path
from deepfleet.gateway.keys import ApiKey
from deepfleet.gateway.store.base import KeyRecords
from deepfleet.gateway.store.open import State, open_state

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: float) -> float:
    """`30d`, `12h`, `90m` from now, or an ISO date/time (UTC unless it says otherwise)."""
    m = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if m:
        return now + int(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: give a duration like 30d or 12h, or an ISO date like 2027-01-31"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def open_fleet_state(file: Path | None, state_dir: Path | None) -> State:
    """The config's state backend; a clean CLI failure (naming the field) when it cannot open."""
    cfg = load_config(file) if file else default_config()
    keys_db = keys_db_path(cfg, resolve_state_dir(cfg if file else None, state_dir))
    try:
        return open_state(cfg.gateway.state, keys_db)
    except StateError as exc:
        fail(f"gateway.state: {exc}")


def _store(file: Path | None, state_dir: Path | None) -> KeyRecords:
    return open_fleet_state(file, state_dir).keys


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _state(k: ApiKey, now: float) -> str:
    if k.usable(now) is None:
        return "active"
    return "revoked" if k.revoked_at else "expired"


def create(
    name: str = typer.Option(..., "--name", help="Who or what the key is for."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute."),
    max_concurrent: int | None = typer.Option(
        None, "--max-concurrent", min=1, help="Requests in flight at once."
    ),
    reasoning_cap: int | None = typer.Option(
        None, "--reasoning-cap", min=1, help="Most thinking tokens per request."
    ),
    models: list[str] = typer.Option(
        [], "--models", help="Models it may use (repeat); default: all."
    ),
    expires: str | None = typer.Option(None, "--expires", help="30d, 12h, or a date."),
    admin: bool = typer.Option(False, "--admin", help="May call /admin routes."),
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a key; its secret is printed once and never stored."""
    now = time.time()
    expires_at = parse_expiry(expires, now) if expires else None
    flat = tuple(m for item in models for m in item.split(",") if m)
    key, secret = _store(file, state_dir).create(
        name,
        rpm=rpm,
        tpm=tpm,
        max_concurrent=max_concurrent,
        reasoning_cap=reasoning_cap,
        models=flat,
        expires_at=expires_at,
        admin=admin,
    )
    if as_json:
        out.print_json(json.dumps({"key": dataclasses.asdict(key), "secret": secret}))
        return
    out.print(f"created key {key.id} ({name}). The secret is shown only now:\n{secret}")


def list_keys(
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Keys with their limits and state (never their secrets)."""
    keys = _store(file, state_dir).all()
    now = time.time()
    if as_json:
        out.print_json(
            json.dumps([{**dataclasses.asdict(k), "state": _state(k, now)} for k in keys])
        )
        return
    table = Table()
    for col in (
        "id",
        "name",
        "state",
        "rpm",
        "tpm",
        "concurrent",
        "models",
        "expires",
        "admin",
    ):
        table.add_column(col)
    for k in keys:
        table.add_row(
            k.id,
            k.name,
            _state(k, now),
            str(k.rpm or "-"),
            str(k.tpm or "-"),
            str(k.max_concurrent or "-"),
            ",".join(k.models) or "all",
            _when(k.expires_at),
            "yes" if k.admin else "",
        )
    out.print(table)


def revoke(
    key: str = typer.Argument(..., help="Key id, or a name (revokes every key of it)."),
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
) -> None:
    """Revoke a key; every gateway refuses it from its next request on (PostgreSQL: within
    0.25 s)."""
    revoked = _store(file, state_dir).revoke(key)
    if not revoked:
        fail(f"no live key with id or name {key!r}; see `deepfleet keys list`")
    out.print("revoked " + ", ".join(f"{k.id} ({k.name})" for k in revoked))


def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(
        help="API keys for the gateway (stored hashed in the state backend: SQLite or "
        "PostgreSQL, gateway.state).",
        no_args_is_help=True,
    )
    keys_app.command("create")(create)
    keys_app.command("list")(list_keys)
    keys_app.command("revoke")(revoke)
    app.add_typer(keys_app, name="keys")
