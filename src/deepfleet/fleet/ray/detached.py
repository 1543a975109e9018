"""The fleet's detached actors and placement groups on the cluster: find, kill, remove.

Supervisor actors and their placement groups outlive the controller (fleet.ray.survivors), so
nothing of Ray ends them when it dies: `up` adopts or kills what it finds under its prefix,
and `deepfleet down` removes everything under it (`remove_recorded`, through
connect.remove_fleet), also when no controller runs. `down` has no config, so the Ray
launcher records where the fleet's cluster is (ray-fleet.json in the state dir).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group_table,
    remove_placement_group,
)

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.launcher import LauncherError
from deepfleet.fleet.ray.placement import nodes_in_order
from deepfleet.fleet.ray.survivors import (
    IDENTITY_TIMEOUT_S,
    RECORD,
    FleetRecord,
    FoundHost,
    HostDecision,
    HostIdentity,
    decide,
    under,
)
from deepfleet.fleet.state import FleetState, ReplicaStatus

log = logging.getLogger(__name__)
STOP_GRACE_S = 15.0


RAY_INIT_ERRORS = (ConnectionError, RuntimeError, ray.exceptions.RayError)
"""What ray.init raises for a cluster that is not there or refuses us."""


def ray_init(address: str, namespace: str) -> None:
    """ray.init as a driver of deepfleet's: quiet, its workers' logs not streamed here."""
    ray.init(
        address=address,
        namespace=namespace,
        logging_level="WARNING",
        log_to_driver=False,
        configure_logging=False,
    )


def _handles(names: list[str]) -> dict[str, Any]:
    """The named actors' handles, by name (one that died since it was listed is left out)."""
    handles: dict[str, Any] = {}
    for name in names:
        with contextlib.suppress(ValueError):
            handles[name] = ray.get_actor(name)
    return handles


def find_hosts(prefix: str) -> tuple[list[FoundHost], dict[str, Any]]:
    """Every live named actor under `prefix` in this namespace, with its identity (asked
    all at once, IDENTITY_TIMEOUT_S in all), and the actor handles by name."""
    handles = _handles(under(prefix, ray.util.list_named_actors()))
    refs = {name: actor.identity.remote() for name, actor in handles.items()}
    if not refs:
        return [], handles
    done, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=IDENTITY_TIMEOUT_S)
    found: list[FoundHost] = []
    for name, ref in refs.items():
        if ref not in done:
            found.append(FoundHost(name, None, f"no answer in {IDENTITY_TIMEOUT_S:.0f}s"))
            continue
        try:
            found.append(FoundHost(name, ray.get(ref)))
        except ray.exceptions.RayError as exc:
            found.append(FoundHost(name, None, type(exc).__name__))
    return found, handles


def kill_hosts(handles: list[Any], grace_s: float = STOP_GRACE_S) -> None:
    """Stop each actor's engine (SIGTERM through its supervisor, all at once, `grace_s` in
    all), then kill the actors: their guards kill whatever engine is left."""
    refs = [actor.stop.remote() for actor in handles]
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=grace_s)
    for actor in handles:
        with contextlib.suppress(ray.exceptions.RayError, ValueError):
            ray.kill(actor, no_restart=True)


def groups_under(prefix: str) -> dict[str, PlacementGroup]:
    """The placement groups under `prefix` not yet removed, by name."""
    out: dict[str, PlacementGroup] = {}
    for pg_id, info in placement_group_table().items():
        name = str(info.get("name") or "")
        if info.get("state") != "REMOVED" and under(prefix, [name]):
            out[name] = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))
    return out


def remove_groups(prefix: str, keep: set[str]) -> list[str]:
    """Remove the placement groups under `prefix` except those named in `keep`."""
    removed = []
    for name, group in groups_under(prefix).items():
        if name not in keep:
            with contextlib.suppress(ray.exceptions.RayError, ValueError):
                remove_placement_group(group)
            removed.append(name)
    return removed


@dataclass(frozen=True)
class AdoptedHost:
    """A detached supervisor actor a dead controller left, taken over for one replica."""

    actor: Any
    name: str
    identity: HostIdentity
    group: PlacementGroup | None
    nodes: list[str]
    restarts: int  # the replica's restarts before this actor's own (from fleet.json)

    def take_over(self, status: ReplicaStatus, mirrored: Sequence[str]) -> None:
        """Start the replica's status from the host's, so that the gateway keeps routing to
        a ready engine while the new controller starts."""
        st = self.identity.status
        for key in (*mirrored, "generation"):
            setattr(status, key, getattr(st, key))
        status.restarts = self.restarts + st.restarts
        status.nodes = self.nodes or ([st.node] if st.node else [])


def adopt_hosts(
    prefix: str,
    addresses: dict[str, str],
    previous: FleetState | None,
    plans: list[ReplicaPlan],
    kv_cache: KvCacheSpec,
) -> tuple[HostDecision, dict[str, AdoptedHost]]:
    """Find the hosts under `prefix`, decide (survivors.decide), kill the ones to kill and
    remove the placement groups no adopted host uses. `addresses`: node id -> address."""
    found, handles = find_hosts(prefix)
    decision = decide(found, plans, kv_cache)
    kill_hosts([handles[h.name] for h, _ in decision.kill if h.name in handles])
    for host, why in decision.kill:
        log.warning("killed detached engine host %s: %s", host.name, why)
    remove_groups(prefix, keep={h.name for h in decision.adopted.values()})
    groups = groups_under(prefix)
    before = {r.replica_id: r.restarts for r in previous.replicas} if previous else {}
    adopted: dict[str, AdoptedHost] = {}
    for rid, host in decision.adopted.items():
        ident = host.identity
        assert ident is not None
        group = groups.get(host.name)
        bundles = _bundle_nodes(group)
        nodes = [addresses.get(n, n[:12]) for n in nodes_in_order(bundles)] if bundles else []
        base = max(0, before.get(rid, 0) - ident.status.restarts)
        adopted[rid] = AdoptedHost(handles[host.name], host.name, ident, group, nodes, base)
    return decision, adopted


def _bundle_nodes(group: PlacementGroup | None) -> dict[int, str]:
    if group is None:
        return {}
    table = placement_group_table(group)
    return {int(k): str(v) for k, v in table["bundles_to_node_id"].items()}


def reachable(address: str, timeout_s: float = 3.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout_s).close()
    except (OSError, ValueError):
        return False
    return True


def remove_recorded(state_dir: Path) -> list[str]:
    """Kill every actor and remove every placement group of the fleet recorded in
    `state_dir`; returns their names. Nothing to do without a record, or when nothing listens
    at the cluster's address (its actors died with it); LauncherError when something does
    but refuses us. Call connect.remove_fleet, which sets up Ray's authentication first."""
    record = FleetRecord.load(state_dir)
    if record is None or not reachable(record.address):
        return []
    try:
        ray_init(record.address, record.namespace)
    except RAY_INIT_ERRORS as exc:
        raise LauncherError(
            f"cannot connect to Ray at {record.address} to remove the fleet's engines: {exc}; "
            f"give this shell the cluster's token (RAY_AUTH_MODE=token and "
            f"RAY_AUTH_TOKEN_PATH), or run `deepfleet down` on the head"
        ) from exc
    try:
        names = under(record.prefix, ray.util.list_named_actors())
        kill_hosts(list(_handles(names).values()))
        groups = remove_groups(record.prefix, keep=set())
    finally:
        ray.shutdown()
    (state_dir / RECORD).unlink(missing_ok=True)
    return sorted({*names, *groups})
