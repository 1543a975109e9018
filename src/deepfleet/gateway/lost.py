"""Replicas the fleet state shows lost: the gateway cuts its connections to them.

An engine that dies on a reachable host resets its connections, and its streams migrate at
once (`disconnect`). An engine whose node vanished (power, a cable, a partition) sends
nothing: its streams would wait for the stall deadline, and a request still waiting for its
first byte for the whole read timeout. The controller learns of such a loss on its own
(Ray marks the node dead, the supervisor gives up on the replica and restarts it elsewhere)
and writes it to the state file; on reading it the gateway cuts every connection to that
engine (`UpstreamPool.lose`), so streams migrate (`lost`) and requests without an answer yet
are retried on another replica.

Lost: a replica that was ready (or unhealthy: its probes fail, but it may come back) in the
previous state, and now is gone from the file, is in any other state (restarting, stopping,
starting again, failed), has another address, or runs on a node marked dead. An unhealthy
replica is not lost: a stream on an engine that stops answering moves at the stall deadline.
"""

from __future__ import annotations

from deepfleet.fleet.state import FleetState, ReplicaState

SERVING = frozenset({ReplicaState.READY, ReplicaState.UNHEALTHY})


def serving(state: FleetState) -> dict[str, str]:
    """Replica id -> url of the replicas the gateway may hold connections to."""
    return {r.replica_id: r.url for r in state.replicas if r.state in SERVING}


def lost(before: dict[str, str], state: FleetState) -> dict[str, str]:
    """Of the replicas that were serving (`before`, from `serving`), the ones `state` shows
    lost: replica id -> the url they were serving on."""
    if not before:
        return {}
    dead = {n.address for n in state.nodes if not n.alive}
    dead |= {n.node_id for n in state.nodes if not n.alive}
    now = {r.replica_id: r for r in state.replicas}
    out = {}
    for replica_id, url in before.items():
        r = now.get(replica_id)
        if (
            r is None
            or r.state not in SERVING
            or r.url != url
            or r.node in dead
            or any(n in dead for n in r.nodes)
        ):
            out[replica_id] = url
    return out
