"""Ray's node table (`ray.nodes()`) as the fleet state's NodeStatus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deepfleet.fleet.state import NodeStatus

HEAD_RESOURCE = "node:__internal_head__"
DEVICE_RESOURCES = ("GPU", "NPU", "CPU")


def node_status(raw: Mapping[str, Any]) -> NodeStatus:
    res: Mapping[str, float] = raw.get("Resources") or {}
    return NodeStatus(
        node_id=str(raw["NodeID"]),
        address=str(raw.get("NodeManagerAddress", "")),
        alive=bool(raw.get("Alive", False)),
        head=HEAD_RESOURCE in res,
        hostname=str(raw.get("NodeManagerHostname", "")),
        devices={k: float(res[k]) for k in DEVICE_RESOURCES if res.get(k)},
        memory_bytes=int(res.get("memory", 0)),
    )


def node_table(raw: list[Mapping[str, Any]]) -> list[NodeStatus]:
    """Head first, then by address; a node that died and came back shows once per id."""
    nodes = [node_status(n) for n in raw]
    return sorted(nodes, key=lambda n: (not n.head, not n.alive, n.address, n.node_id))
