"""`deepfleet keys` on either backend and `deepfleet state migrate | usage`, against a real
PostgreSQL server: keys made in SQLite move to PostgreSQL (idempotently), keep working there,
and no output or file shows the DSN's password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deepfleet.cli.main import app
from deepfleet.config.load import load
from deepfleet.fleet.controller import write_gateway_settings
from deepfleet.gateway.keys import hash_secret
from deepfleet.gateway.limits import TokenBuckets
from deepfleet.gateway.server import load_spec, worker_settings
from deepfleet.gateway.store.postgres_keys import PostgresKeys
from tests.helpers.postgres import Postgres

runner = CliRunner()


def fleet_yaml(tmp_path: Path, state: dict[str, str] | None) -> Path:
    data: dict[str, object] = {
        "models": [{"name": "m", "source": "bundled"}],
        "state_dir": str(tmp_path / "state"),
    }
    if state:
        data["gateway"] = {"state": state}
    path = tmp_path / f"fleet-{state['backend'] if state else 'sqlite'}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str | Path, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, [str(a) for a in args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_migrate_sqlite_to_postgres_then_keys_work_there(tmp_path: Path, pg: Postgres) -> None:
    env = {"FLEET_DB": pg.dsn}
    sqlite_cfg = fleet_yaml(tmp_path, None)
    pg_cfg = fleet_yaml(tmp_path, {"backend": "postgres", "dsn_env": "FLEET_DB"})
    alice = json.loads(
        cli("keys", "create", "--name", "alice", "--rpm", "60", "-f", sqlite_cfg, "--json")
    )
    json.loads(cli("keys", "create", "--name", "bob", "-f", sqlite_cfg, "--json"))
    cli("keys", "revoke", "bob", "-f", sqlite_cfg)
    usage = TokenBuckets(tmp_path / "state" / "keys-usage.db")
    usage.record(alice["key"]["id"], "m", 10, 20)
    usage.record(alice["key"]["id"], "m", 1, 2)
    usage.close()

    first = json.loads(
        cli("state", "migrate", "--to-env", "FLEET_DB", "-f", sqlite_cfg, "--json", env=env)
    )
    assert (first["keys_copied"], first["keys_present"]) == (2, 0)
    assert (first["usage_requests"], first["usage_tokens"]) == (2, 33)
    again = json.loads(
        cli("state", "migrate", "--to-env", "FLEET_DB", "-f", sqlite_cfg, "--json", env=env)
    )
    assert (again["keys_copied"], again["keys_present"]) == (0, 2)
    for summary in (first, again):
        assert pg.password not in json.dumps(summary)
        assert summary["target"] == f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.dbname}"

    listed = json.loads(cli("keys", "list", "-f", pg_cfg, "--json", env=env))
    assert {(k["name"], k["state"]) for k in listed} == {("alice", "active"), ("bob", "revoked")}
    rows = json.loads(cli("state", "usage", "-f", pg_cfg, "--json", env=env))
    assert [(r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        (2, 11, 22)
    ]
    # The secret made in SQLite authenticates against PostgreSQL.
    keys = PostgresKeys(pg.dsn)
    assert keys.by_hash()[hash_secret(alice["secret"])].name == "alice"
    keys.close()

    carol = json.loads(cli("keys", "create", "--name", "carol", "-f", pg_cfg, "--json", env=env))
    cli("keys", "revoke", carol["key"]["id"], "-f", pg_cfg, env=env)
    listed = json.loads(cli("keys", "list", "-f", pg_cfg, "--json", env=env))
    assert {k["name"]: k["state"] for k in listed}["carol"] == "revoked"


def test_rendered_gateway_settings_hold_no_password(tmp_path: Path, pg: Postgres) -> None:
    """gateway.json names the variable; each gateway reads the DSN from its environment."""
    cfg = load(fleet_yaml(tmp_path, {"backend": "postgres", "dsn_env": "FLEET_DB"}))
    written = write_gateway_settings(cfg, tmp_path / "state").read_text()
    assert pg.password not in written and '"dsn_env": "FLEET_DB"' in written
    spec = load_spec(tmp_path / "state" / "gateway.json")
    assert worker_settings(spec, tmp_path / "state" / "fleet.json").state.dsn_env == "FLEET_DB"


def test_unreachable_or_unset_backend_is_a_clear_cli_error(tmp_path: Path, pg: Postgres) -> None:
    cfg = fleet_yaml(tmp_path, {"backend": "postgres", "dsn_env": "FLEET_DB"})
    unset = runner.invoke(app, ["keys", "list", "-f", str(cfg)], env={"FLEET_DB": ""})
    assert unset.exit_code == 1 and "FLEET_DB is not set" in unset.output
    wrong = pg.dsn.replace(pg.password, "not-the-password")
    bad = runner.invoke(app, ["keys", "list", "-f", str(cfg)], env={"FLEET_DB": wrong})
    assert bad.exit_code == 1 and "gateway.state: cannot connect" in bad.output
    assert "not-the-password" not in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("to", ["not a dsn ===", "mysql://x"])
def test_migrate_refuses_a_bad_target(tmp_path: Path, to: str) -> None:
    result = runner.invoke(
        app, ["state", "migrate", "--to", to, "-f", str(fleet_yaml(tmp_path, None))]
    )
    assert result.exit_code == 1 and "--to" in result.output
