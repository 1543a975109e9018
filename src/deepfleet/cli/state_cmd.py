"""`deepfleet state migrate | usage`: the gateway's state backend (gateway.state).

`migrate` copies a SQLite state into PostgreSQL (idempotent); `usage` prints the usage ledger
of whichever backend the config names. A DSN is shown without its password.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from deepfleet.cli.common import (
    FILE_OPT,
    STATE_OPT,
    console,
    fail,
    load_config,
    out,
    resolve_state_dir,
)
from deepfleet.cli.keys_cmd import open_fleet_state
from deepfleet.config import default_config
from deepfleet.config.state import StateError, dsn_fields, redact
from deepfleet.fleet.controller import keys_db_path
from deepfleet.gateway.store.migrate import migrate_sqlite


def _target(to: str | None, to_env: str | None) -> str:
    if to_env:
        value = os.environ.get(to_env)
        if not value:
            fail(f"--to-env: the environment variable {to_env} is not set")
        return value
    if not to:
        fail("give the PostgreSQL DSN with --to postgresql://user@host/db or --to-env VAR")
    try:
        dsn_fields(to)
    except StateError as exc:
        fail(f"--to: {exc}")
    return to


def migrate(
    to: str | None = typer.Option(
        None,
        "--to",
        help="PostgreSQL DSN, e.g. postgresql://deepfleet@db/deepfleet (a password here is "
        "visible to other users in ps: prefer --to-env or PGPASSWORD).",
    ),
    to_env: str | None = typer.Option(
        None, "--to-env", help="Name of an environment variable holding the DSN."
    ),
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Copy the SQLite keys and usage ledger into PostgreSQL (safe to run again)."""
    dsn = _target(to, to_env)
    cfg = load_config(file) if file else default_config()
    keys_db = keys_db_path(cfg, resolve_state_dir(cfg if file else None, state_dir))
    if not as_json:
        console.print(f"copying {keys_db} into {redact(dsn)} ...")
    try:
        summary = migrate_sqlite(keys_db, dsn)
    except StateError as exc:
        fail(str(exc))
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(summary)))
        return
    for note in summary.notes:
        console.print(f"note: {note}")
    out.print(
        f"{summary.keys_copied} keys copied ({summary.keys_present} already there), "
        f"{summary.usage_lines} usage lines ({summary.usage_requests} requests, "
        f"{summary.usage_tokens} tokens) into {summary.target}, schema version "
        f"{summary.schema_version}.\nNext: set gateway.state to "
        "{backend: postgres, dsn_env: ...} in fleet.yaml and restart the gateways."
    )


def usage(
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The usage ledger: requests and tokens per key, model and hour (UTC)."""
    state = open_fleet_state(file, state_dir)
    try:
        rows = state.limits.usage()
    finally:
        state.close()
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(r) for r in rows]))
        return
    table = Table()
    for col in ("hour (UTC)", "key", "model", "requests", "prompt", "completion"):
        table.add_column(col)
    for r in rows:
        hour = datetime.fromtimestamp(r.hour * 3600, UTC).strftime("%Y-%m-%d %H:00")
        table.add_row(
            hour, r.key_id, r.model, str(r.requests), str(r.prompt_tokens), str(r.completion_tokens)
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    state_app = typer.Typer(
        help="The gateway's state backend: keys, usage ledger, rate limits.", no_args_is_help=True
    )
    state_app.command("migrate")(migrate)
    state_app.command("usage")(usage)
    app.add_typer(state_app, name="state")
