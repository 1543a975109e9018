"""The fleet state in PostgreSQL, for gateways on other hosts (`gateway.state.share_fleet`).

A gateway reads a few files of the controller's state dir: fleet.json (the replicas, their
URLs and states), kv_routing.json (the routing knobs) and engine_api_key (what the engines
require). A gateway on another host (a gateway pod of the Kubernetes bundle, one behind
`render lb` elsewhere) has no such dir, so the controller copies those files into the table
`fleet_files` of the state database that every gateway already shares (fleet_share.py), and
a remote gateway writes them into a state dir of its own (fleet_mirror.py), which it then
follows as a local gateway follows the controller's.

Each write of a changed file takes the next value of one sequence as its version; a reader
asks `latest()` (one index lookup) each poll and fetches only the rows above what it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]

_PUT = """
INSERT INTO fleet_files AS f (name, body, version)
    VALUES (%s, %s, nextval('fleet_files_version'))
    ON CONFLICT (name) DO UPDATE SET body = excluded.body, version = excluded.version
    WHERE f.body IS DISTINCT FROM excluded.body
"""


def put(conn: Conn, files: Mapping[str, str]) -> int:
    """Store `files` (name -> text); only the ones whose text changed get a new version.
    Returns how many did."""
    written = 0
    with conn.transaction():
        for name, body in files.items():
            written += conn.execute(_PUT, (name, body)).rowcount
    return written


def latest(conn: Conn) -> int:
    """The newest version of any file; 0 when none was stored yet."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM fleet_files").fetchone()
    return int(row[0]) if row else 0


def since(conn: Conn, version: int) -> list[tuple[str, str, int]]:
    """(name, text, version) of every file written after `version`, oldest first."""
    rows = conn.execute(
        "SELECT name, body, version FROM fleet_files WHERE version > %s ORDER BY version",
        (version,),
    ).fetchall()
    return [(str(n), str(b), int(v)) for n, b, v in rows]
