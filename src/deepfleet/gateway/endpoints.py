"""The gateway's view of the fleet: ready replicas per model, from the controller's state file,
minus the ones this worker ejected after a failed connection."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deepfleet.fleet.state import FleetState, ReplicaState, read_state
from deepfleet.routing.base import Endpoint


@dataclass
class ModelEntry:
    name: str
    routing: str
    endpoints: list[Endpoint] = field(default_factory=list)


class EndpointTable:
    def __init__(
        self,
        state_path: Path,
        *,
        eject_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = state_path
        self._mtime_ns = -1
        self._eject_s = eject_s
        self._clock = clock
        self._ejected: dict[str, float] = {}
        self.models: dict[str, ModelEntry] = {}
        self.in_flight: defaultdict[str, int] = defaultdict(int)

    def refresh(self) -> bool:
        """Reload when the file changed; True if it did. Cheap enough to call every 200 ms."""
        try:
            mtime = os.stat(self._path).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._mtime_ns:
            return False
        state = read_state(self._path)
        if state is None:
            return False
        self._mtime_ns = mtime
        self.load(state)
        return True

    def load(self, state: FleetState) -> None:
        models = {m.name: ModelEntry(m.name, m.routing) for m in state.models}
        for r in state.replicas:
            if r.state is ReplicaState.READY and r.model in models:
                models[r.model].endpoints.append(Endpoint(r.replica_id, r.model, r.url))
        self.models = models

    def ready(self, model: str) -> list[Endpoint]:
        entry = self.models.get(model)
        if entry is None:
            return []
        now = self._clock()
        return [
            Endpoint(e.replica_id, e.model, e.url, self.in_flight[e.replica_id])
            for e in entry.endpoints
            if self._ejected.get(e.replica_id, 0.0) <= now
        ]

    def eject(self, replica_id: str) -> None:
        """Skip a replica for a short while after it refused a connection; the controller's
        state catches up within a second when the engine really died."""
        self._ejected[replica_id] = self._clock() + self._eject_s
