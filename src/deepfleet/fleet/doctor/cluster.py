"""The doctor across a Ray cluster: one probe actor pinned to each alive node collects that
node's facts, opens a listening port on the node's address, and tries to reach every other
node's port and the head's GCS port; the head compares clocks."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from deepfleet.config.schema import FleetConfig
from deepfleet.fleet.doctor.checks import Expectations, Finding, Level, judge_node
from deepfleet.fleet.doctor.facts import NodeFacts, collect

SKEW_WARN_S, SKEW_ERROR_S = 0.5, 2.0
CONNECT_TIMEOUT_S = 3.0
OPEN_PORTS_FIX = (
    "allow TCP between the cluster's nodes on the cluster network (Ray, NCCL and the engines "
    "use many ports); with a firewall, start nodes with --port-base and open those ranges"
)


class NodeProbe:
    """Body of the per-node probe actor."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._sock: socket.socket | None = None

    def facts(self, paths: list[str]) -> NodeFacts:
        return collect(self.node, paths)

    def now(self) -> float:
        return time.time()

    def listen(self) -> int:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((self.node, 0))
        self._sock.listen(16)
        return int(self._sock.getsockname()[1])

    def reach(self, targets: list[tuple[str, int, str]]) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for host, port, label in targets:
            try:
                with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
                    out.append((label, None))
            except OSError as exc:
                out.append((label, f"{host}:{port}: {exc.strerror or exc}"))
        return out

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def clock_finding(node: str, skew_s: float) -> Finding:
    text = f"clock {skew_s * 1000:+.0f} ms from the head"
    if abs(skew_s) < SKEW_WARN_S:
        return Finding("ok", node, "clock", text)
    level: Level = "error" if abs(skew_s) >= SKEW_ERROR_S else "warn"
    return Finding(
        level, node, "clock", text, "run NTP on every node (chrony or systemd-timesyncd)"
    )


def reach_findings(node: str, results: list[tuple[str, str | None]]) -> list[Finding]:
    failed = [(label, err) for label, err in results if err]
    if not failed:
        return [Finding("ok", node, "network", f"reaches {len(results)} port(s) on other nodes")]
    return [
        Finding("error", node, "network", f"cannot reach {label} ({err})", OPEN_PORTS_FIX)
        for label, err in failed
    ]


def cluster_findings(cfg: FleetConfig, state_dir: Path, exp: Expectations) -> list[Finding]:
    """Connect to the fleet's cluster and examine every node (raises ClusterUnreachable)."""
    from deepfleet.fleet.ray.connect import cluster_address, connect

    connect(cfg, state_dir)
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from deepfleet.fleet.ray.nodes import node_table

    try:
        head_host, _, head_port = cluster_address(cfg, state_dir).rpartition(":")
        table = node_table(ray.nodes())
        out = [
            Finding(
                "warn",
                n.address,
                "node",
                "dead: Ray lost this node",
                "restart it: deepfleet node start --join HEAD:PORT",
            )
            for n in table
            if not n.alive
        ]
        alive = [n for n in table if n.alive]
        probe_class: Any = ray.remote(num_cpus=0)(NodeProbe)
        probes = {
            n.address: probe_class.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)
            ).remote(n.address)
            for n in alive
        }
        for node, probe in probes.items():
            facts: NodeFacts = ray.get(probe.facts.remote(exp.paths), timeout=120)
            sent = time.time()
            theirs: float = ray.get(probe.now.remote(), timeout=30)
            skew = theirs - (sent + time.time()) / 2
            out += [*judge_node(facts, exp), clock_finding(node, skew)]
        ports = {node: ray.get(p.listen.remote(), timeout=30) for node, p in probes.items()}
        for node, probe in probes.items():
            targets = [
                (other, port, f"node {other}'s test port {port}")
                for other, port in ports.items()
                if other != node
            ]
            targets.append((head_host, int(head_port), f"the head's Ray port {head_port}"))
            out += reach_findings(node, ray.get(probe.reach.remote(targets), timeout=60))
        for probe in probes.values():
            ray.get(probe.close.remote(), timeout=10)
            ray.kill(probe)
        return out
    finally:
        ray.shutdown()
