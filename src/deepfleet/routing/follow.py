"""The fleet state file as it changes, for every part of a gateway that reads it.

One StateFollower (fleet/state.py) per gateway worker keeps the endpoint table and the
router's feeds on the same state; `event_ports` turns it into the KV event sources a relay
subscribes to.
"""

from __future__ import annotations

from pathlib import Path

from deepfleet.fleet.state import StateFollower
from deepfleet.kvcache.endpoints import replica_events_endpoint
from deepfleet.kvcache.relay import Source, Sources

__all__ = ["StateFollower", "event_ports"]


def event_ports(path: Path, bind_host: str = "127.0.0.1") -> Sources:
    """A source of replica id -> the endpoint of its KV events (the engine's Unix socket, or
    the TCP port on `bind_host` to bind) and its restart count, following the state file
    (what the KV event relay subscribes to)."""
    follower = StateFollower(path)

    def ports() -> dict[str, Source]:
        follower.poll()
        state = follower.state
        if state is None:
            return {}
        return {
            r.replica_id: Source(
                replica_events_endpoint(r.kv_events_endpoint, r.kv_events_port, bind_host),
                r.restarts,
                r.kv_events_bound,
            )
            for r in state.replicas
            if r.kv_events_port is not None
        }

    return ports
