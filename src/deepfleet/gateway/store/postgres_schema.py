"""The PostgreSQL state schema, versioned: `schema_version` holds the last migration applied,
and every gateway or CLI that connects applies the missing ones first, in one transaction
under an advisory lock (several gateways starting at once apply each migration once).

Times are seconds since the epoch from the database's own clock (`clock_timestamp()`), so
gateway hosts whose clocks disagree still refill one bucket at one rate.

- df_lease: take up to a lease's worth of tokens from a key's bucket (after refilling it) if
  it holds at least what the request needs; df_give: a lease's unspent tokens back. One
  statement each (a row lock, no retry loop). leases.py says how the gateway spends them.
- df_enter: a batch of a key's concurrent slots across gateways: the slots of gateways that
  have not sent a heartbeat within the TTL (a SIGKILLed gateway) stop counting.
- fleet_files: the state dir files a gateway reads, copied by a controller with
  `gateway.state.share_fleet` for gateways on other hosts (postgres_fleet.py).
"""

from __future__ import annotations

from typing import Any

import psycopg

LOCK_ID = 7_236_001  # pg_advisory_xact_lock key for migrations

MIGRATIONS: list[str] = [
    # 1: keys, buckets, the usage ledger, concurrency slots
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        rpm INTEGER,
        tpm INTEGER,
        max_concurrent INTEGER,
        reasoning_cap INTEGER,
        models TEXT NOT NULL DEFAULT '[]',
        admin INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE keys_version (one BOOLEAN PRIMARY KEY DEFAULT TRUE, v BIGINT NOT NULL);
    INSERT INTO keys_version VALUES (TRUE, 0);
    CREATE FUNCTION df_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE keys_version SET v = v + 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION df_keys_changed();

    CREATE TABLE buckets (
        key_id TEXT NOT NULL, kind TEXT NOT NULL,
        level DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (key_id, kind)
    );
    CREATE FUNCTION df_lease(
        p_key TEXT, p_kind TEXT, p_cap DOUBLE PRECISION, p_least DOUBLE PRECISION,
        p_most DOUBLE PRECISION, OUT granted DOUBLE PRECISION, OUT level DOUBLE PRECISION
    ) LANGUAGE plpgsql AS $$
    DECLARE
        lvl DOUBLE PRECISION;
        upd DOUBLE PRECISION;
        now_s DOUBLE PRECISION;
    BEGIN
        INSERT INTO buckets AS b VALUES (p_key, p_kind, p_cap, 0)
            ON CONFLICT (key_id, kind) DO NOTHING;
        SELECT b.level, b.updated INTO lvl, upd FROM buckets b
            WHERE b.key_id = p_key AND b.kind = p_kind FOR UPDATE;
        now_s := extract(epoch FROM clock_timestamp());  -- after the lock: never behind upd
        lvl := least(p_cap, lvl + greatest(0, now_s - upd) * p_cap / 60.0);
        granted := 0;
        IF lvl >= p_least THEN
            granted := greatest(p_least, least(p_most, lvl));
            lvl := lvl - granted;
        END IF;
        UPDATE buckets b SET level = lvl, updated = greatest(now_s, upd)
            WHERE b.key_id = p_key AND b.kind = p_kind;
        level := lvl;
    END $$;
    -- A lease's unspent tokens back (or a debt, negative), never above the capacity.
    CREATE FUNCTION df_give(
        p_key TEXT, p_kind TEXT, p_cap DOUBLE PRECISION, p_amount DOUBLE PRECISION
    ) RETURNS VOID LANGUAGE plpgsql AS $$
    DECLARE
        now_s DOUBLE PRECISION := extract(epoch FROM clock_timestamp());
    BEGIN
        UPDATE buckets b SET
            level = least(p_cap, b.level + greatest(0, now_s - b.updated) * p_cap / 60.0
                + p_amount),
            updated = greatest(now_s, b.updated)
            WHERE b.key_id = p_key AND b.kind = p_kind;
    END $$;

    CREATE TABLE usage (
        key_id TEXT NOT NULL, model TEXT NOT NULL, hour BIGINT NOT NULL,
        origin TEXT NOT NULL DEFAULT 'live',
        requests BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        PRIMARY KEY (key_id, model, hour, origin)
    );

    CREATE TABLE gateways (id TEXT PRIMARY KEY, seen DOUBLE PRECISION NOT NULL);
    CREATE TABLE slots (
        key_id TEXT NOT NULL, gateway_id TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (key_id, gateway_id)
    );
    -- Up to p_n of the key's slots for gateway p_gw; how many were granted (0: none free).
    CREATE FUNCTION df_enter(
        p_key TEXT, p_gw TEXT, p_limit INTEGER, p_ttl DOUBLE PRECISION, p_n INTEGER
    ) RETURNS INTEGER LANGUAGE plpgsql AS $$
    DECLARE
        used BIGINT;
        granted INTEGER;
        now_s DOUBLE PRECISION;
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('deepfleet.slots:' || p_key));
        now_s := extract(epoch FROM clock_timestamp());
        SELECT coalesce(sum(s.n), 0) INTO used FROM slots s JOIN gateways g ON g.id = s.gateway_id
            WHERE s.key_id = p_key AND g.seen > now_s - p_ttl;
        granted := least(p_n, p_limit - used);
        IF granted <= 0 THEN
            RETURN 0;
        END IF;
        INSERT INTO slots VALUES (p_key, p_gw, granted)
            ON CONFLICT (key_id, gateway_id) DO UPDATE SET n = slots.n + excluded.n;
        RETURN granted;
    END $$;
    """,
    # 2: the fleet state shared with gateways on other hosts
    """
    CREATE SEQUENCE fleet_files_version;
    CREATE TABLE fleet_files (
        name TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        version BIGINT NOT NULL
    );
    """,
]


def migrate(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[int, int]:
    """Apply the missing migrations; (version before, version after)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        before = int(row[0]) if row and row[0] is not None else 0
        if before > len(MIGRATIONS):
            raise RuntimeError(
                f"the state database has schema version {before}, newer than this deepfleet "
                f"knows ({len(MIGRATIONS)}): upgrade deepfleet"
            )
        for version in range(before + 1, len(MIGRATIONS) + 1):
            conn.execute(MIGRATIONS[version - 1].encode())
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return before, len(MIGRATIONS)
