"""The controller's half of `gateway.state.share_fleet`: copy the files a gateway reads from
the state dir into the state database, for gateways on other hosts (fleet_mirror.py is the
other half; postgres_fleet.py the table).

Why the database and not an HTTP endpoint on the head: every gateway of a multi-host fleet
already holds credentials for it (keys, limits and usage live there), so sharing the fleet
state through it opens no port and adds no token, and a remote gateway keeps following while
the head's own gateway restarts. The files copied include the engines' key: whoever can read
the database can already create an admin API key, so it gives nothing more away.

A `Controller` listener: each state change sets a flag, and a thread copies the files (the
controller has already written them) when it wakes, so a burst of changes costs one round
trip and the controller's loop never waits for the database. A database that is down is
logged and tried again; the controller keeps supervising.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import psycopg

from deepfleet.config.kvcache import KV_ROUTING_FILE
from deepfleet.config.state import StateError, StateSpec
from deepfleet.fleet.files import ENGINE_KEY_FILE
from deepfleet.fleet.state import STATE_FILE, FleetState
from deepfleet.gateway.store import postgres_fleet
from deepfleet.gateway.store.postgres_conn import connect, first_line

log = logging.getLogger(__name__)

SHARED_FILES = (STATE_FILE, KV_ROUTING_FILE, ENGINE_KEY_FILE)
"""What a gateway reads from the state dir (its gateway.json it builds from fleet.yaml)."""
RESYNC_S = 5.0
"""A copy this often even without a change: a database that was down, or wiped, catches up."""
RETRY_S = 2.0


def read_shared(state_dir: Path) -> dict[str, str]:
    """The shared files that exist in `state_dir`, by name."""
    out: dict[str, str] = {}
    for name in SHARED_FILES:
        with contextlib.suppress(FileNotFoundError):
            out[name] = (state_dir / name).read_text()
    return out


class FleetSharer:
    def __init__(self, dsn: str, state_dir: Path) -> None:
        self._dsn = dsn
        self.state_dir = state_dir
        self.copies = 0
        """Files written to the database so far (a changed file counts once)."""
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def __call__(self, state: FleetState) -> None:
        """The controller's listener: the state files changed."""
        self._dirty.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-sharer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Copy the last state (the controller's `stopping`), then end the thread."""
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._conn is not None:
            self._conn.close()

    def share_once(self) -> int:
        """Copy the files now; how many changed. Raises StateError or psycopg.Error."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn)
        written = postgres_fleet.put(self._conn, read_shared(self.state_dir))
        self.copies += written
        return written

    def _run(self) -> None:
        while True:
            self._dirty.wait(RESYNC_S)
            self._dirty.clear()
            try:
                self.share_once()
            except (StateError, psycopg.Error) as exc:
                log.warning("gateway.state.share_fleet: %s; trying again", first_line(exc))
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self._dirty.set()
                if self._stop.wait(RETRY_S):
                    return
                continue
            if self._stop.is_set():
                return


def fleet_sharer(spec: StateSpec, state_dir: Path) -> FleetSharer | None:
    """A sharer when the config asks for one (raises StateError when its DSN is missing)."""
    if not spec.share_fleet:
        return None
    return FleetSharer(spec.resolve_dsn(), state_dir)
