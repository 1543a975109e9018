"""The state backend's contract, on both backends (SQLite files, a real PostgreSQL server):
keys, token buckets, concurrency slots and the usage ledger behave alike; PostgreSQL's schema
is versioned; a DSN's password is refused in the config and never shown."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import psycopg
import pytest

from deepfleet.config.load import ConfigError, validate
from deepfleet.config.schema import GatewaySpec
from deepfleet.config.state import StateError, StateSpec, redact
from deepfleet.fleet.ports import free_port
from deepfleet.gateway.store.open import State, open_state
from deepfleet.gateway.store.postgres_conn import connect
from deepfleet.gateway.store.postgres_keys import PostgresKeys
from deepfleet.gateway.store.postgres_limits import PostgresLimits
from deepfleet.gateway.store.postgres_schema import MIGRATIONS
from tests.gateway.conftest import MODEL, Rig
from tests.helpers.postgres import Postgres

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
async def state(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[State]:
    if request.param == "sqlite":
        spec = StateSpec()
    else:
        db: Postgres = request.getfixturevalue("pg")
        monkeypatch.setenv("TEST_STATE_DSN", db.dsn)
        spec = StateSpec(backend="postgres", dsn_env="TEST_STATE_DSN")
    st = open_state(spec, tmp_path / "keys.db")
    await st.keys.start()
    await st.limits.start()
    yield st
    await st.limits.stop()
    await st.keys.stop()
    st.close()


async def test_keys_create_list_revoke_and_version(state: State) -> None:
    v0 = state.keys.version()
    key, secret = state.keys.create("alice", rpm=60, tpm=1000, models=("m1",), admin=True)
    await asyncio.sleep(0.4)  # PostgreSQL: the snapshot follows within its poll period
    assert state.keys.version() != v0
    listed = state.keys.all()
    assert [(k.id, k.name, k.rpm, k.tpm, k.models, k.admin) for k in listed] == [
        (key.id, "alice", 60, 1000, ("m1",), True)
    ]
    assert secret.startswith(f"dfk_{key.id}_")
    assert [k.id for k in state.keys.by_hash().values()] == [key.id]
    assert [k.id for k in state.keys.revoke("alice")] == [key.id]
    assert state.keys.revoke("alice") == []  # already revoked
    await asyncio.sleep(0.4)
    assert next(iter(state.keys.by_hash().values())).revoked_at is not None


async def test_bucket_admits_capacity_then_refuses(state: State) -> None:
    verdicts = [await state.limits.take("k", "rpm", 5, cost=1, need=1) for _ in range(7)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False] * 2
    assert verdicts[-1].retry_after_s >= 1 and not verdicts[-1].unavailable
    state.limits.settle("k", "rpm", 5, -2)  # a refund
    await asyncio.sleep(0.2)
    assert (await state.limits.take("k", "rpm", 5, cost=1, need=1)).allowed


async def test_concurrency_slots(state: State) -> None:
    assert await state.limits.enter("k", 2) and await state.limits.enter("k", 2)
    assert not await state.limits.enter("k", 2)
    state.limits.leave("k", 2)
    await asyncio.sleep(0.2)
    assert await state.limits.enter("k", 2)


async def test_usage_ledger_adds_up(state: State) -> None:
    for prompt, completion in [(3, 5), (4, 6), (10, 0)]:
        state.limits.record("k1", "m", prompt, completion)
    state.limits.record("k2", "m", 1, 1)
    await asyncio.sleep(0.3)
    rows = {(r.key_id, r.model): r for r in state.limits.usage()}
    assert (rows["k1", "m"].requests, rows["k1", "m"].prompt_tokens) == (3, 17)
    assert rows["k1", "m"].completion_tokens == 11
    assert rows["k2", "m"].requests == 1
    assert rows["k1", "m"].hour == int(time.time() // 3600)


async def test_concurrency_is_shared_across_gateways_and_a_dead_ones_slots_expire(
    pg: Postgres,
) -> None:
    a, b = PostgresLimits(pg.dsn, ttl_s=1.0), PostgresLimits(pg.dsn, ttl_s=1.0)
    await a.start()
    await b.start()
    try:
        assert await a.enter("k", 2) and await b.enter("k", 2)
        assert not await a.enter("k", 2) and not await b.enter("k", 2)
        # `a` dies without a word: its heartbeat stops, and after the TTL its slot is free.
        assert a._heartbeat is not None
        a._heartbeat.cancel()
        await asyncio.sleep(1.3)
        assert await b.enter("k", 2)
    finally:
        await b.stop()
        await a.stop()
        a.close()
        b.close()


async def test_buckets_are_exact_under_concurrent_gateways(pg: Postgres) -> None:
    gateways = [PostgresLimits(pg.dsn) for _ in range(3)]
    for g in gateways:
        await g.start()
    try:
        verdicts = await asyncio.gather(
            *(g.take("k", "rpm", 6, cost=1, need=1) for g in gateways for _ in range(10))
        )
        assert sum(v.allowed for v in verdicts) == 6  # 30 asked, the bucket holds 6 (+0.1/s)
    finally:
        for g in gateways:
            await g.stop()
            g.close()


async def test_database_away_refuses_with_unavailable(pg: Postgres) -> None:
    limits = PostgresLimits(pg.dsn)
    await limits.start()
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as admin:  # cut the pool's connections
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'deepfleet' AND pid <> pg_backend_pid()"
            )
        v = await limits.take("k", "rpm", 5, cost=1, need=1)
        assert not v.allowed and v.unavailable
    finally:
        await limits.stop()
        limits.close()


def test_schema_is_versioned_and_applied_once(pg: Postgres) -> None:
    for _ in range(2):
        connect(pg.dsn).close()
    with psycopg.connect(pg.dsn) as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [v[0] for v in versions] == list(range(1, len(MIGRATIONS) + 1))
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StateError, match="newer than this deepfleet knows"):
        connect(pg.dsn)


def test_connect_failure_names_the_server_not_the_password(pg: Postgres) -> None:
    wrong = pg.dsn.replace(pg.password, "wrong-password-123")
    with pytest.raises(StateError) as info:
        PostgresKeys(wrong)
    message = str(info.value)
    assert f"{pg.host}:{pg.port}" in message and "password" in message  # "authentication"
    assert "wrong-password-123" not in message and pg.password not in message
    assert pg.password not in redact(pg.dsn)


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ({"backend": "postgres"}, "needs dsn"),
        ({"backend": "postgres", "dsn": "postgresql://u:pw@h/db"}, "must not hold a password"),
        ({"backend": "postgres", "dsn": "host=h password=pw"}, "must not hold a password"),
        ({"backend": "sqlite", "dsn": "postgresql://u@h/db"}, "for backend: postgres"),
        ({"backend": "mysql"}, "sqlite"),
        ({"backend": "postgres", "dsn_env": "1BAD"}, "dsn_env"),
    ],
)
def test_config_errors_name_the_field(state: dict[str, str], error: str) -> None:
    """What `deepfleet` prints for a bad fleet.yaml: the field path, the fix, no password."""
    data = {"models": [{"name": "m", "source": "bundled"}], "gateway": {"state": state}}
    with pytest.raises(ConfigError) as info:
        validate(data)
    text = "\n".join(info.value.problems)
    assert text.startswith("gateway.state") and error in text
    assert "pw" not in text.replace("password", "")


def test_unset_dsn_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_DSN", raising=False)
    spec = StateSpec(backend="postgres", dsn_env="NOPE_DSN")
    with pytest.raises(StateError, match=r"gateway\.state\.dsn_env: .*NOPE_DSN is not set"):
        spec.resolve_dsn()


async def test_a_lease_serves_requests_without_a_round_trip(pg: Postgres) -> None:
    """A high-limit key's first request leases a second of its budget; the next ones are
    served from it even with the database cut off."""
    limits = PostgresLimits(pg.dsn)
    await limits.start()
    try:
        assert (await limits.take("k", "tpm", 600_000, cost=50, need=50)).allowed
        with psycopg.connect(pg.dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'deepfleet' AND pid <> pg_backend_pid()"
            )
        # 10,000 tokens leased (1/60 of 600,000): 199 more requests of 50 fit in it.
        verdicts = [await limits.take("k", "tpm", 600_000, cost=50, need=50) for _ in range(199)]
        assert all(v.allowed for v in verdicts)
    finally:
        await limits.stop()
        limits.close()


async def test_ledger_lines_survive_a_lost_connection(pg: Postgres) -> None:
    """A ledger write that fails is kept and retried (on a new connection), not dropped."""
    limits = PostgresLimits(pg.dsn)
    await limits.start()
    try:
        limits.record("k", "m", 1, 2)
        await asyncio.sleep(0.3)
        with psycopg.connect(pg.dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'deepfleet' AND pid <> pg_backend_pid()"
            )
        for _ in range(4):
            limits.record("k", "m", 1, 2)
        await asyncio.sleep(1.6)
        [row] = limits.usage()
        assert (row.requests, row.prompt_tokens, row.completion_tokens) == (5, 5, 10)
    finally:
        await limits.stop()
        limits.close()


def test_gateway_refuses_to_start_without_its_database(tmp_path: Path) -> None:
    """`python -m deepfleet.gateway` with an unreachable PostgreSQL: one line naming the field
    and the server, no password, no traceback."""
    port = free_port()  # nothing listens there
    spec = GatewaySpec(state=StateSpec(backend="postgres", dsn_env="GW_DSN"))
    (tmp_path / "gateway.json").write_text(spec.model_dump_json())
    argv = [sys.executable, "-m", "deepfleet.gateway", "--state-file", str(tmp_path / "fleet.json")]
    argv += ["--settings", str(tmp_path / "gateway.json"), "--port", str(free_port())]
    run = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GW_DSN": f"postgresql://u:hunter2@127.0.0.1:{port}/db"},
    )
    assert run.returncode != 0
    assert f"gateway.state: cannot connect to postgresql://u@127.0.0.1:{port}/db" in run.stderr
    assert "hunter2" not in run.stderr + run.stdout and "Traceback" not in run.stderr


def test_gateway_env_carries_the_dsn_variable_and_libpq_settings() -> None:
    parent = {"FLEET_DB": "postgresql://u:pw@h/db", "PGPASSFILE": "/x", "AWS_SECRET": "no"}
    spec = StateSpec(backend="postgres", dsn_env="FLEET_DB")
    assert spec.gateway_env(parent) == {"FLEET_DB": parent["FLEET_DB"], "PGPASSFILE": "/x"}
    assert StateSpec().gateway_env(parent) == {}


async def test_sqlite_gateway_writes_the_usage_ledger(rig: Rig) -> None:
    """The default backend through a real gateway: each finished request of a key adds the
    engine's usage to keys-usage.db's ledger."""
    key, secret = rig.keys.create("alice")
    c = openai.AsyncOpenAI(base_url=rig.url + "/v1", api_key=secret, max_retries=0)
    rig.clients.append(c)
    msgs = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        await c.chat.completions.create(model=MODEL, messages=msgs)  # type: ignore[arg-type]
    await asyncio.sleep(0.1)  # accounting runs just after the request (later.py)
    [row] = rig.gateway.buckets.usage()
    assert (row.key_id, row.model, row.requests) == (key.id, MODEL, 2)
    assert (row.prompt_tokens, row.completion_tokens) == (6, 10)  # FakeEngine: 3 + 5 each
