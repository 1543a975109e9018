"""Endpoint health: ready replicas per model from the controller's state file, minus the ones
this gateway worker ejected.

A model that scales to zero (its route has `cold_wait_s`) may always become ready: with no
replica at all it is `cold`, and a request for it waits (the controller sees the waiting
request in the gateway's metrics and starts a replica) for the larger of the model's
`queue_timeout_s` and its start time.

Passive ejection: each failure before the first byte ejects a replica for a backoff that
doubles with consecutive failures; when it expires one request is let through (half-open);
its success clears the record, its failure ejects again for longer. A restart of the replica
(seen in the state file) clears the record too.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deepfleet.fleet.state import FleetState, ReplicaState
from deepfleet.routing.base import Endpoint
from deepfleet.routing.follow import StateFollower

WAIT_POLL_S = 0.05
DEFAULT_QUEUE_TIMEOUT_S = 60.0


@dataclass
class ModelEntry:
    name: str
    routing: str
    max_model_len: int | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S
    """How long a request may wait for a replica that is coming (the model's setting)."""
    coming: int = 0
    """Replicas starting, restarting or unhealthy (not draining): ready ones may follow."""
    views: dict[tuple[str, int], Endpoint] = field(default_factory=dict)
    """`ready()`'s endpoints by (replica, in-flight count): immutable, so built once each."""
    cold_wait_s: float | None = None
    """Scales to zero: the controller starts a replica for a waiting request within this."""

    @property
    def status(self) -> str:
        """`ready`, `starting` (none ready, one coming), `cold` (none at all; one starts on
        demand) or `unavailable`."""
        if self.endpoints:
            return "ready"
        if self.coming:
            return "starting"
        return "cold" if self.cold_wait_s is not None else "unavailable"


_COMING = frozenset({ReplicaState.STARTING, ReplicaState.RESTARTING, ReplicaState.UNHEALTHY})


@dataclass
class Ejection:
    failures: int
    until: float
    restarts: int
    probing: bool = False


class EndpointTable:
    def __init__(
        self,
        state_path: Path,
        *,
        eject_base_s: float = 1.0,
        eject_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.follower = StateFollower(state_path)
        """The state file's follower; other readers of the same state listen to it."""
        self._base = eject_base_s
        self._max = eject_max_s
        self._clock = clock
        self._ejected: dict[str, Ejection] = {}
        self._restarts: dict[str, int] = {}
        self.models: dict[str, ModelEntry] = {}
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.follower.listen(self.load)

    @property
    def path(self) -> Path:
        """The fleet state file this table follows."""
        return self.follower.path

    def refresh(self) -> bool:
        """Reload when the file changed; True if it did. Cheap enough to call every 200 ms."""
        return self.follower.poll()

    def load(self, state: FleetState) -> None:
        models = {
            m.name: ModelEntry(
                m.name,
                m.routing,
                m.max_model_len,
                queue_timeout_s=DEFAULT_QUEUE_TIMEOUT_S
                if m.queue_timeout_s is None
                else m.queue_timeout_s,
                cold_wait_s=m.cold_wait_s,
            )
            for m in state.models
        }
        for r in state.replicas:
            self._restarts[r.replica_id] = r.restarts
            ej = self._ejected.get(r.replica_id)
            if ej is not None and ej.restarts != r.restarts:
                del self._ejected[r.replica_id]
            if r.model not in models or r.draining:
                continue
            if r.state is ReplicaState.READY:
                models[r.model].endpoints.append(
                    Endpoint(r.replica_id, r.model, r.url, role=r.role)
                )
            elif r.state in _COMING:
                models[r.model].coming += 1
        self.models = models

    def ready(self, model: str) -> list[Endpoint]:
        """Routable endpoints now; an ejected one whose time is up is offered once (half-open)."""
        entry = self.models.get(model)
        if entry is None:
            return []
        ejected = self._ejected
        now = self._clock() if ejected else 0.0
        views = entry.views
        out = []
        for e in entry.endpoints:
            if ejected:
                ej = ejected.get(e.replica_id)
                if ej is not None:
                    if ej.until > now or ej.probing:
                        continue
                    ej.probing = True
            n = self.in_flight[e.replica_id]
            view = views.get((e.replica_id, n))
            if view is None:
                view = views[(e.replica_id, n)] = Endpoint(
                    e.replica_id, e.model, e.url, n, role=e.role
                )
            out.append(view)
        return out

    def queue_timeout_s(self, model: str) -> float:
        """How long a request waits for a replica: the model's `queue_timeout_s`, or its start
        time when longer and the model scales to zero."""
        entry = self.models.get(model)
        if entry is None:
            return 0.0
        return max(entry.queue_timeout_s, entry.cold_wait_s or 0.0)

    def may_become_ready(self, model: str) -> bool:
        """A replica of `model` is starting or restarting, a ready one is ejected for now, or
        the model scales from zero: a request may wait for it rather than fail (`wait_ready`)."""
        entry = self.models.get(model)
        return entry is not None and bool(
            entry.coming or entry.endpoints or entry.cold_wait_s is not None
        )

    async def wait_ready(
        self, model: str, timeout_s: float, gone: Callable[[], bool] = lambda: False
    ) -> list[Endpoint]:
        """`ready(model)` once it is not empty; [] after `timeout_s`, when no replica is coming
        any more, or when `gone()` (the client left). The table itself is refreshed by its
        owner (the gateway re-reads the state file every 0.2 s)."""
        deadline = self._clock() + timeout_s
        while True:
            endpoints = self.ready(model)
            if endpoints or gone() or not self.may_become_ready(model):
                return endpoints
            if self._clock() >= deadline:
                return []
            await asyncio.sleep(WAIT_POLL_S)

    def restarts_of(self, replica_id: str) -> int:
        """How often the replica restarted, per the state file: a failure seen at one count
        says nothing of the process that a restart brought."""
        return self._restarts.get(replica_id, 0)

    def eject(self, replica_id: str) -> float:
        """Record a failure before the first byte; returns the ejection time in seconds."""
        prev = self._ejected.get(replica_id)
        failures = prev.failures + 1 if prev else 1
        span = min(self._base * 2.0 ** (failures - 1), self._max)
        self._ejected[replica_id] = Ejection(
            failures, self._clock() + span, self._restarts.get(replica_id, 0)
        )
        return span

    def succeeded(self, replica_id: str) -> None:
        if replica_id in self._ejected:
            del self._ejected[replica_id]

    def release_probe(self, replica_id: str) -> None:
        """A half-open probe that was offered but not used may be offered again."""
        ej = self._ejected.get(replica_id)
        if ej is not None:
            ej.probing = False
