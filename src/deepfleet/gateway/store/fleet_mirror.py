"""A remote gateway's half of `gateway.state.share_fleet`: follow the fleet state that the
controller copies into the state database (fleet_share.py), writing it into a state dir of
this host's own, which the gateway then follows as if the controller ran beside it.

The files are replaced atomically (fleet/files.py), the others before fleet.json, so a gateway
that sees a new fleet.json already has the routing settings and the engines' key written with
it. Only the names the controller shares are written: a row with any other name (the
database is shared) is ignored, never turned into a path.

A thread polls the newest version every `poll_s` (one index lookup; the gateway's endpoint
table looks at fleet.json every 200 ms, so a change reaches routing within about twice that).
A database that is down leaves the last state in place and is tried again: the gateway keeps
routing with what it knew, as a local gateway does when its controller dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from deepfleet.config.state import StateError
from deepfleet.fleet.files import atomic_write, private_dir
from deepfleet.fleet.state import STATE_FILE
from deepfleet.gateway.store import postgres_fleet
from deepfleet.gateway.store.fleet_share import SHARED_FILES
from deepfleet.gateway.store.postgres_conn import connect, first_line

log = logging.getLogger(__name__)
POLL_S = 0.2
RETRY_S = 2.0


class FleetMirror:
    def __init__(self, dsn: str, state_dir: Path, poll_s: float = POLL_S) -> None:
        self._dsn = dsn
        self.state_dir = private_dir(state_dir)
        self.poll_s = poll_s
        self.version = 0
        """The newest version written here."""
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    @property
    def has_state(self) -> bool:
        return (self.state_dir / STATE_FILE).is_file()

    def sync_once(self) -> int:
        """Write what changed since the last call; how many files. Raises StateError or
        psycopg.Error."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn)
        newest = postgres_fleet.latest(self._conn)
        if newest == self.version:
            return 0
        if newest < self.version:  # a database restored or replaced: take it all again
            self.version = 0
        rows = [r for r in postgres_fleet.since(self._conn, self.version) if r[0] in SHARED_FILES]
        rows.sort(key=lambda r: r[0] == STATE_FILE)  # fleet.json last
        for name, body, _ in rows:
            atomic_write(self.state_dir / name, body)
        self.version = max([self.version, *(v for _, _, v in rows)])
        return len(rows)

    def wait_first(self, timeout_s: float, on_wait: Callable[[str], None]) -> bool:
        """Sync until the controller's fleet.json is here (True) or `timeout_s` passed (False);
        `on_wait` hears why it waits, every 10 s."""
        deadline = time.monotonic() + timeout_s
        said = 0.0
        while True:
            why = "no fleet state in the database yet (is the controller running with "
            why += "gateway.state.share_fleet?)"
            try:
                self.sync_once()
            except (StateError, psycopg.Error) as exc:
                why = first_line(exc)
                self._drop()
            if self.has_state:
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            if now - said >= 10:
                on_wait(why)
                said = now
            time.sleep(min(self.poll_s * 5, max(0.0, deadline - now)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.sync_once()
            except (StateError, psycopg.Error) as exc:
                self.errors += 1
                log.warning("following the fleet state: %s; trying again", first_line(exc))
                self._drop()
                self._stop.wait(RETRY_S)
