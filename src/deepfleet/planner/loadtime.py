"""Cold start: from empty disks to a serving fleet, per layout (pure).

    hub   = checkpoint bytes / hub bandwidth                    (the head pulls once)
    lan   = max(bytes the head sends / lan, largest node's bytes / lan)
            (every other node fetches its share from the head at once: the head's uplink
            carries the sum, each node's downlink its own share)
    load  = node bytes / disk read bandwidth                    (the node's engines read their
            shards from local disk; the disk, not PCIe, is the bottleneck of a cold load)
    init  = engine start besides the weights (profiling, KV cache, CUDA graphs), a constant
    from local disk = load + init;  from empty disks = hub + lan + load + init

A node holds what its replicas need (weights/stages.py): the whole checkpoint when a replica
fits inside a node, else the share of the pipeline stages it runs (tp devices per stage, so
devices_per_node / tp stages per node). Shard granularity is ignored: a stage boundary inside
a shard costs at most one shard more per node.

Defaults: the engine start is measured (vLLM 0.26 on the lent H200, docs/gpu.md: DeepSeek-V3's
architecture cut to 8 layers ready in 114 s with torch.compile's cache of an earlier start,
247 s without it; a 7B in 77 s / 202-241 s). The disk, LAN and hub rates are assumptions until
measured on the site (the disk: scripts/gpu/load_libs.py); set them in `cluster.bandwidth`.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepfleet.planner.layout import Layout

DISK_BPS = 2.2e9
"""Sequential read of a local NVMe, bytes/s: measured on the lent H200's disk (2.20 GB/s
buffered, page cache dropped; docs/models.md), where vLLM's default loader reached 2.10 GB/s."""
LAN_BPS = 2.5e9
"""File transfer over the cluster network, bytes/s (an assumption: 25 Gb/s Ethernet)."""
HUB_BPS = 100e6
"""Download from the hub or its mirror, bytes/s (an assumption: 800 Mb/s uplink)."""
INIT_S = 114.0
"""Engine start besides reading weights, seconds: measured with a warm torch.compile cache;
a node's very first start adds about 130 s (see the module docstring)."""


@dataclass(frozen=True)
class Bandwidth:
    disk_bps: float = DISK_BPS
    lan_bps: float = LAN_BPS
    hub_bps: float = HUB_BPS
    init_s: float = INIT_S


def bandwidth(
    disk_gb_s: float | None = None,
    lan_gb_s: float | None = None,
    hub_mb_s: float | None = None,
    engine_init_s: float | None = None,
) -> Bandwidth:
    """The rates given (fleet.yaml `cluster.bandwidth`, `plan` options), defaults for the rest."""
    d = Bandwidth()
    return Bandwidth(
        disk_bps=disk_gb_s * 1e9 if disk_gb_s else d.disk_bps,
        lan_bps=lan_gb_s * 1e9 if lan_gb_s else d.lan_bps,
        hub_bps=hub_mb_s * 1e6 if hub_mb_s else d.hub_bps,
        init_s=engine_init_s if engine_init_s is not None else d.init_s,
    )


@dataclass(frozen=True)
class ColdStart:
    checkpoint_bytes: int
    node_bytes: int
    """Bytes the busiest node holds (its replicas' files)."""
    nodes: int
    hub_s: float
    lan_s: float
    load_s: float
    init_s: float

    @property
    def from_local_disk_s(self) -> float:
        return self.load_s + self.init_s

    @property
    def with_lan_s(self) -> float:
        """Weights on the head's disk, spread to the others, then loaded."""
        return self.lan_s + self.from_local_disk_s

    @property
    def from_empty_s(self) -> float:
        return self.hub_s + self.with_lan_s


def node_bytes(checkpoint_bytes: int, tp: int, pp: int, devices_per_node: int) -> int:
    """Bytes one node holds for a layout of tp x pp devices per replica."""
    if tp * pp <= devices_per_node:
        return checkpoint_bytes
    stages_per_node = max(1, devices_per_node // tp)
    return -(-checkpoint_bytes * min(stages_per_node, pp) // pp)


def cold_start(
    checkpoint_bytes: int,
    tp: int,
    pp: int,
    nodes_used: int,
    devices_per_node: int,
    bw: Bandwidth | None = None,
) -> ColdStart:
    """The cold-start estimate of one layout on `nodes_used` nodes (the head one of them)."""
    bw = bw or Bandwidth()
    per_node = node_bytes(checkpoint_bytes, tp, pp, devices_per_node)
    others = max(0, nodes_used - 1)
    lan_s = max(others * per_node / bw.lan_bps, per_node / bw.lan_bps) if others else 0.0
    return ColdStart(
        checkpoint_bytes=checkpoint_bytes,
        node_bytes=per_node,
        nodes=nodes_used,
        hub_s=checkpoint_bytes / bw.hub_bps,
        lan_s=lan_s,
        load_s=per_node / bw.disk_bps,
        init_s=bw.init_s,
    )


def describe(c: ColdStart) -> str:
    """One line: bytes per node and the times, for `deepfleet plan`."""
    return (
        f"cold start: {c.node_bytes / 1e9:,.0f} GB per node on {c.nodes} node(s); "
        f"from local disk {c.from_local_disk_s / 60:.1f} min (load {c.load_s:.0f}s + engine "
        f"{c.init_s:.0f}s), with the LAN spread {c.with_lan_s / 60:.1f} min, from the hub "
        f"{c.from_empty_s / 60:.1f} min"
    )


def for_layout(
    weight_bytes: int, layout: Layout, devices_per_node: int, bw: Bandwidth | None = None
) -> ColdStart:
    """The cold start of a planned layout: all its replicas, on the nodes they fill."""
    nodes_used = max(1, -(-layout.devices_used // devices_per_node))
    return cold_start(weight_bytes, layout.tp, layout.pp, nodes_used, devices_per_node, bw)


def cold_start_json(c: ColdStart, bw: Bandwidth) -> dict[str, float | int]:
    return {
        "checkpoint_bytes": c.checkpoint_bytes,
        "bytes_per_node": c.node_bytes,
        "nodes": c.nodes,
        "hub_s": round(c.hub_s, 1),
        "lan_s": round(c.lan_s, 1),
        "load_s": round(c.load_s, 1),
        "engine_init_s": round(c.init_s, 1),
        "from_local_disk_s": round(c.from_local_disk_s, 1),
        "with_lan_spread_s": round(c.with_lan_s, 1),
        "from_empty_disks_s": round(c.from_empty_s, 1),
        "assumed_disk_bps": bw.disk_bps,
        "assumed_lan_bps": bw.lan_bps,
        "assumed_hub_bps": bw.hub_bps,
    }
