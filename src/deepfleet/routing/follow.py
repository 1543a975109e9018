"""The fleet state file as it changes, for every part of a gateway that reads it.

`poll()` stats fleet.json and parses it again only when its mtime changed (cheap enough to
call every 200 ms), then hands the new state to each listener in the order they listened.
One follower per gateway worker keeps the endpoint table and the router's feeds on the same
state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from deepfleet.fleet.state import FleetState, read_state

Listener = Callable[[FleetState], None]


class StateFollower:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: FleetState | None = None
        """The last state read, None before the first."""
        self._mtime_ns = -1
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def poll(self) -> bool:
        """Re-read the file if it changed; True if it did (the listeners were called)."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._mtime_ns:
            return False
        state = read_state(self.path)
        if state is None:
            return False
        self._mtime_ns = mtime
        self.state = state
        for listener in self._listeners:
            listener(state)
        return True


def event_ports(path: Path, bind_host: str = "127.0.0.1") -> Callable[[], dict[str, str]]:
    """A source of replica id -> the endpoint to bind for its KV events, following the state
    file (what the KV event relay binds)."""
    follower = StateFollower(path)

    def ports() -> dict[str, str]:
        follower.poll()
        state = follower.state
        if state is None:
            return {}
        return {
            r.replica_id: f"tcp://{bind_host}:{r.kv_events_port}"
            for r in state.replicas
            if r.kv_events_port is not None
        }

    return ports
