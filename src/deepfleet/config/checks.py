"""Checks across fleet.yaml sections that no single section can make: the `deploy` section
against `cluster` and `models` (node count, the Ray head, devices per replica, NPU address
plans). config.load.validate() reports each problem with its field path."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

from deepfleet.config.autoscale import ReplicaRange
from deepfleet.config.cluster import ClusterSpec
from deepfleet.config.deploy import DeploySpec, NpuAddressPlan
from deepfleet.config.schema import FleetConfig, ModelSpec, ParallelSpec


def deploy_problems(cfg: FleetConfig) -> list[str]:
    """What the `deploy` section gets wrong against the cluster and the models, one line each."""
    deploy, cluster = cfg.deploy, cfg.cluster
    found: list[str] = []
    if deploy.nodes and len(deploy.nodes) != cluster.nodes:
        found.append(
            f"deploy.nodes: {len(deploy.nodes)} entries, but cluster.nodes is {cluster.nodes} "
            "(list every node once, the head first)"
        )
    head = cluster.head
    if deploy.nodes and head is not None and str(deploy.nodes[0].address) != head:
        found.append(
            f"deploy.nodes[0].address: the first node is the Ray head, so it must be "
            f"cluster.head {head} (got {str(deploy.nodes[0].address)!r})"
        )
    if cluster.mode != "local":
        found += _layout_problems(cluster, cfg.models)
    return found + _npu_problems(deploy, cluster.devices_per_node)


def _npu_plans(
    deploy: DeploySpec, per_node: int
) -> Iterator[tuple[str, NpuAddressPlan, list[IPv4Address]]]:
    for i, node in enumerate(deploy.nodes):
        if node.npu is not None:
            yield f"deploy.nodes[{i}].npu", node.npu, node.npu.expand(per_node)


def _npu_problems(deploy: DeploySpec, per_node: int) -> list[str]:
    """NPU address plans: one address per NPU, unique across the fleet (and apart from the
    node addresses), inside the subnet of their gateway."""
    problems: list[str] = []
    owner = {n.address: f"deploy.nodes[{i}].address" for i, n in enumerate(deploy.nodes)}
    for path, npu, addresses in _npu_plans(deploy, per_node):
        field = f"{path}.addresses" if npu.addresses is not None else f"{path}.base"
        if len(addresses) != per_node:
            problems.append(
                f"{field}: {len(addresses)} addresses, but cluster.devices_per_node is "
                f"{per_node} (one per NPU)"
            )
        clashes = [(n, a, owner[a]) for n, a in enumerate(addresses) if a in owner]
        if clashes:
            n, address, other = clashes[0]
            more = f" and {len(clashes) - 1} more" if len(clashes) > 1 else ""
            problems.append(
                f"{field}: NPU {n} address {address}{more} overlap {other} (every NPU and node "
                "address must be unique)"
            )
        owner.update({a: f"{path} NPU {n}" for n, a in enumerate(addresses) if a not in owner})
        netmask = npu.netmask or deploy.ascend.netmask
        gateway = npu.gateway or deploy.ascend.gateway
        try:
            nets = [IPv4Network(f"{a}/{netmask}", strict=False) for a in addresses]
        except ValueError:
            problems.append(f"{path}.netmask: {netmask} is not a netmask")
            continue
        for n, (address, net) in enumerate(zip(addresses, nets, strict=True)):
            if address in (net.network_address, net.broadcast_address):
                problems.append(f"{field}: NPU {n} address {address} is not a host of {net}")
        if gateway is None:
            problems.append(f"{path}.gateway: required (here or in deploy.ascend.gateway)")
        elif outside := [n for n, net in enumerate(nets) if gateway not in net]:
            problems.append(
                f"{path}.gateway: {gateway} is outside the subnet of NPU {outside[0]} "
                f"({nets[outside[0]]})"
            )
        elif gateway in addresses:
            problems.append(f"{path}.gateway: {gateway} is also an NPU address")
    return problems


def _layout_problems(cluster: ClusterSpec, models: list[ModelSpec]) -> list[str]:
    problems: list[str] = []
    per_node, total = cluster.devices_per_node, cluster.devices_per_node * cluster.nodes
    for i, m in enumerate(models):
        if not isinstance(m.parallel, ParallelSpec):
            continue
        p = m.parallel
        if p.tp <= per_node and per_node % p.tp:
            usable = ", ".join(str(d) for d in range(1, per_node + 1) if per_node % d == 0)
            problems.append(
                f"models[{i}].parallel.tp: {p.tp} does not divide cluster.devices_per_node "
                f"{per_node}, so {per_node % p.tp} device(s) per node stay idle (use {usable})"
            )
        devices = p.tp * p.pp * p.dp
        replicas = m.replicas.max if isinstance(m.replicas, ReplicaRange) else m.fixed_replicas or 1
        if devices * replicas > total:
            problems.append(
                f"models[{i}]: {replicas} replica(s) x tp {p.tp} x pp {p.pp} x dp {p.dp} need "
                f"{devices * replicas} devices, the cluster has {total} "
                f"({cluster.nodes} nodes x {per_node})"
            )
    return problems
