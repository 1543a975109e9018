"""Which engine hosts a new controller adopts in Ray mode, and which it kills. Pure: no Ray.

Each replica's supervisor actor (actor.EngineHost) and its placement group are detached and
named `PREFIX/REPLICA/TAG` in deepfleet's Ray namespace (PREFIX: one per state dir, TAG: one
per placement, so a replica placed again never waits for its old name to be freed). They
outlive the controller's Ray job, and with them the engine, which the guard ends only when
the actor's worker dies. A new controller lists the names under its prefix, asks each actor
for its `HostIdentity`, and decides here:

- adopted: the actor answered, its engine is still the process it started (pid AND start
  time, checked by the actor on its own node), it is starting, ready or unhealthy and not
  draining, and its `config_hash` (fleet.adopt.engine_hash, given to it when it was created)
  is what this controller would start for a planned replica of its model
  (fleet.adopt.match_engines: the same matcher as local mode);
- killed (the actor, then its placement group): every other host under the prefix, with the
  reason: it did not answer, its engine is gone or was on its way out, another config, or
  more replicas than the config wants. They hold devices the new placements need.

A replica with no adopted host is started as usual. Placement groups under the prefix that
no adopted host uses (a placement that was waiting when the controller died) are removed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.adopt import ADOPTABLE, Adoption, match_engines
from deepfleet.fleet.files import atomic_write
from deepfleet.fleet.state import ReplicaStatus

IDENTITY_TIMEOUT_S = 10.0
RECORD = "ray-fleet.json"


def fleet_prefix(state_dir: Path) -> str:
    """The names of one state dir's fleet on a cluster (two fleets may share a cluster)."""
    return "fleet-" + hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class FleetRecord:
    """Where a fleet's hosts are: written by the Ray launcher when it connects, read by
    `deepfleet down`, which has no config (fleet.ray.detached.remove_recorded)."""

    address: str
    namespace: str
    prefix: str

    def save(self, state_dir: Path) -> None:
        atomic_write(state_dir / RECORD, json.dumps(asdict(self)))

    @staticmethod
    def load(state_dir: Path) -> FleetRecord | None:
        try:
            return FleetRecord(**json.loads((state_dir / RECORD).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def host_name(prefix: str, replica_id: str, tag: str) -> str:
    """The name of one placement of a replica: its actor's and its placement group's."""
    return f"{prefix}/{replica_id}/{tag}"


def replica_of(name: str) -> str:
    """`PREFIX/REPLICA/TAG` -> REPLICA (a model name, so a replica id, may hold a slash)."""
    return name.split("/", 1)[-1].rsplit("/", 1)[0]


def under(prefix: str, names: list[str]) -> list[str]:
    """The host names of the fleet with `prefix` (another state dir's fleet is never ours)."""
    return sorted(n for n in names if n.startswith(prefix + "/"))


@dataclass(frozen=True)
class HostIdentity:
    """What a supervisor actor says about itself (actor.EngineHost.identity)."""

    status: ReplicaStatus
    """Its replica's status: id, model, config_hash, the engine's pid and pid_start..."""
    engine_alive: bool
    """The engine it started still runs as that process (pid + start time on its node)."""
    node_id: str
    cpu_slot: tuple[int, int] | None = None


@dataclass(frozen=True)
class FoundHost:
    name: str
    identity: HostIdentity | None
    """None: the actor did not answer (its node is gone, or it hangs); `why` says how."""
    why: str = ""


@dataclass
class HostDecision:
    plans: list[ReplicaPlan]
    """The plans to run; an adopted one carries its host's replica id."""
    adopted: dict[str, FoundHost] = field(default_factory=dict)
    """Replica id -> the host adopted for it."""
    kill: list[tuple[FoundHost, str]] = field(default_factory=list)
    """Hosts to kill, each with the reason."""
    adoption: Adoption = field(default_factory=Adoption)


def _unfit(host: FoundHost) -> str | None:
    """Why `host` cannot be adopted whatever the plan, or None."""
    if host.identity is None:
        return f"did not answer ({host.why})" if host.why else "did not answer"
    st = host.identity.status
    if not host.identity.engine_alive:
        return f"its engine is not running ({st.state.value})"
    if st.draining or st.state not in ADOPTABLE:
        return f"its engine was on its way out ({st.state.value})"
    return None


def decide(found: list[FoundHost], plans: list[ReplicaPlan], kv_cache: KvCacheSpec) -> HostDecision:
    """Adopt the hosts that match a plan; kill the rest (see the module docstring)."""
    decision = HostDecision(plans=[])
    fit: list[FoundHost] = []
    for host in found:
        why = _unfit(host)
        if why is None:
            fit.append(host)
        else:
            decision.kill.append((host, why))
    by_status = {id(h.identity.status): h for h in fit if h.identity}
    pairs, stale = match_engines([h.identity.status for h in fit if h.identity], plans, kv_cache)
    for plan, old in pairs:
        if old is None:
            decision.plans.append(plan)
            continue
        decision.adopted[old.replica_id] = by_status[id(old)]
        decision.adoption.replicas[old.replica_id] = old
        decision.plans.append(
            replace(plan, replica_id=old.replica_id, kv_events_port=old.kv_events_port)
        )
    for old in stale:
        decision.kill.append((by_status[id(old)], "another config, or not wanted"))
    decision.adoption.stale = [_remote(h) for h, _ in decision.kill]
    return decision


def _remote(host: FoundHost) -> ReplicaStatus:
    """A killed host for the Adoption's `stale` list: no pid, since its engine's pid is on
    another node (the launcher kills it through Ray; nothing here may signal it)."""
    if host.identity is None:
        return ReplicaStatus(replica_of(host.name), "", "", "", node="?")
    return replace(host.identity.status, pid=None, pid_start=None)
