"""Adoption: a new controller takes over the processes a dead one left running.

Engines, the gateway and companion services each run in a session of their own, so they
outlive a controller that is SIGKILLed (or crashes, or is OOM-killed); the gateway goes on
serving from the last fleet.json. Reloading a 671B model takes most of an hour, so `deepfleet
up` on such a state dir adopts what it finds instead of starting it again:

- a process is a candidate when fleet.json names it and it is still the same process (pid AND
  start time, fleet.process.same_process): a pid reused by another program is never touched;
- a candidate is adopted when its identity hash matches what this controller would start:
  for an engine, `engine_hash` of its model's entry (every field that restarts an engine in
  `deepfleet apply`, deepfleet.fleet.changes) and the KV cache section; for the gateway and
  services, the hash of their command line and environment;
- an adopted replica keeps its id, ports and devices, so its URL in fleet.json stays right;
- candidates that do not match (a changed config, more replicas than the config wants) are
  stopped before anything new starts, since they hold ports, devices and memory.

This module decides for local mode from fleet.json. In Ray mode the engines run in detached
actors that outlive the controller's Ray job; the Ray launcher finds them by name and asks
each for its identity (deepfleet.fleet.ray.survivors), then decides with the same matcher
(`match_engines`): a launcher that can do this is an `EngineAdopter`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import psutil

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines import ReplicaPlan
from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.changes import LIVE_FIELDS
from deepfleet.fleet.process import pid_alive, same_process, signal_group
from deepfleet.fleet.state import FleetState, ReplicaState, ReplicaStatus

ADOPTABLE = (ReplicaState.STARTING, ReplicaState.READY, ReplicaState.UNHEALTHY)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def engine_hash(plan: ReplicaPlan, kv_cache: KvCacheSpec) -> str:
    """What an engine was started from, as far as the config decides it: its model's entry
    less the fields that change without a restart, where the weights are, its layout."""
    model = plan.model.model_dump(mode="json", exclude=set(LIVE_FIELDS))
    return _digest(
        [
            model,
            plan.model_path,
            plan.tp,
            plan.pp,
            kv_cache.model_dump(mode="json", exclude={"routing"}),
        ]
    )


def spec_hash(spec: LaunchSpec) -> str:
    """A gateway's or service's identity: its command line and environment."""
    return _digest([spec.argv, spec.env, spec.cwd])


def survivors(previous: FleetState | None) -> list[ReplicaStatus]:
    """The processes of `previous` on this machine (replicas in local mode, the gateway,
    services) that still run as recorded."""
    if previous is None:
        return []
    gateway = [previous.gateway] if previous.gateway else []
    local = previous.replicas if previous.cluster == "local" else []
    every = [*local, *gateway, *previous.services]
    return [s for s in every if s.pid and same_process(s.pid, s.pid_start)]


def group_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants (bytes; 0 when gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


@dataclass
class Adoption:
    """What a new controller takes over: replica id -> the old status, and the same for the
    gateway and services by id; `stale` were running but do not match (stopped first)."""

    replicas: dict[str, ReplicaStatus] = field(default_factory=dict)
    others: dict[str, ReplicaStatus] = field(default_factory=dict)
    stale: list[ReplicaStatus] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [*self.replicas, *self.others]


def _port(url: str) -> int:
    return urlsplit(url).port or 0


def match_engines(
    candidates: list[ReplicaStatus], plans: list[ReplicaPlan], kv_cache: KvCacheSpec
) -> tuple[list[tuple[ReplicaPlan, ReplicaStatus | None]], list[ReplicaStatus]]:
    """Pair each plan with a running engine of its model, role and engine_hash, or None;
    the candidates left over are stale. A loading engine is adopted too (reloading a large
    model is what this saves); one that was draining or stopping was on its way out.

    A candidate keeps its replica id: one with the plan's own id is preferred, and a plan left
    unpaired whose id an adopted engine now holds gets the next free index of its kind."""
    pool = [s for s in candidates if s.state in ADOPTABLE and not s.draining]
    wants = [engine_hash(plan, kv_cache) for plan in plans]
    paired: list[ReplicaStatus | None] = [None] * len(plans)
    for same_id in (True, False):
        for i, (plan, want) in enumerate(zip(plans, wants, strict=True)):
            if paired[i] is not None:
                continue
            old = next((s for s in pool if _fits(s, plan, want, same_id)), None)
            if old is not None:
                pool.remove(old)
                paired[i] = old
    taken = {s.replica_id for s in paired if s is not None}
    out: list[tuple[ReplicaPlan, ReplicaStatus | None]] = []
    for plan, old in zip(plans, paired, strict=True):
        if old is None and plan.replica_id in taken:
            plan = replace(plan, replica_id=_free_id(plan.replica_id, taken))
        taken.add(old.replica_id if old else plan.replica_id)
        out.append((plan, old))
    kept = {id(s) for s in paired if s is not None}
    return out, [s for s in candidates if id(s) not in kept]


def _fits(s: ReplicaStatus, plan: ReplicaPlan, want: str, same_id: bool) -> bool:
    # The role too: a disaggregated model's prefill and decode engines share the hash of
    # their model's entry, but not their role's arguments.
    return (
        s.model == plan.model.name
        and s.role == plan.role
        and s.config_hash == want
        and (s.replica_id == plan.replica_id or not same_id)
    )


def _free_id(replica_id: str, taken: set[str]) -> str:
    """`m-1` (or `m-decode-1`) -> the first `m-N` (`m-decode-N`) not taken."""
    stem = re.sub(r"-\d+$", "", replica_id)
    return next(f"{stem}-{i}" for i in range(len(taken) + 1) if f"{stem}-{i}" not in taken)


def adopt_replicas(
    previous: FleetState | None, plans: list[ReplicaPlan], kv_cache: KvCacheSpec
) -> tuple[list[ReplicaPlan], Adoption]:
    """Match the running engines of `previous` (local mode) to `plans` (match_engines). An
    adopted plan takes the old replica's id, ports and devices."""
    adoption = Adoption()
    if previous is None or previous.cluster != "local":
        return plans, adoption
    engines = [s for s in previous.replicas if s.pid and same_process(s.pid, s.pid_start)]
    pairs, adoption.stale = match_engines(engines, plans, kv_cache)
    out: list[ReplicaPlan] = []
    for plan, old in pairs:
        if old is None:
            out.append(plan)
            continue
        adoption.replicas[old.replica_id] = old
        out.append(
            replace(
                plan,
                replica_id=old.replica_id,
                port=_port(old.url),
                kv_events_port=old.kv_events_port,
                devices=tuple(old.devices),
            )
        )
    return out, adoption


@runtime_checkable
class EngineAdopter(Protocol):
    """A launcher whose engines outlive the controller where fleet.json's pids cannot reach
    them (Ray: detached actors on other nodes). It finds them, stops the ones that do not
    match (they hold devices), and hands the matching ones to its runners; the returned
    Adoption lists both (its stale entries carry no local pid: nothing here to signal)."""

    def adopt_engines(
        self, previous: FleetState | None, plans: list[ReplicaPlan], kv_cache: KvCacheSpec
    ) -> tuple[list[ReplicaPlan], Adoption]: ...


def adopt_others(
    previous: FleetState | None, specs: dict[str, LaunchSpec], adoption: Adoption
) -> None:
    """Add the gateway and services of `previous` whose launch matches `specs` (by id) to
    `adoption`; those running with another launch go to `stale`."""
    if previous is None:
        return
    gateway = [previous.gateway] if previous.gateway else []
    running = [s for s in [*gateway, *previous.services] if s.pid]
    for old in (s for s in running if same_process(s.pid, s.pid_start)):
        spec = specs.get(old.replica_id)
        if spec is not None and old.config_hash == spec_hash(spec):
            adoption.others[old.replica_id] = old
        else:
            adoption.stale.append(old)


def stop_stale(stale: list[ReplicaStatus], grace_s: float = 15.0, poll_s: float = 0.2) -> None:
    """SIGTERM each stale group (checked again just before), SIGKILL after `grace_s`."""
    mine = [s.pid for s in stale if s.pid and same_process(s.pid, s.pid_start)]
    for pid in mine:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in mine):
        time.sleep(poll_s)
    for pid in mine:
        signal_group(pid, signal.SIGKILL)
