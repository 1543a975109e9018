"""The deploy section's checks: each mistake is one line naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from deepfleet.config import ConfigError, validate
from tests.deploy.conftest import CASES


def ascend(**deploy: Any) -> dict[str, Any]:
    data = CASES["ascend-2x8-mindie"].data()
    data["deploy"] |= deploy
    return data


def nodes(*npus: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": f"node0{i + 1}", "address": f"172.16.0.{101 + i}", "npu": npu}
        for i, npu in enumerate(npus)
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            ascend(nodes=nodes({"base": "10.197.90.10"})),
            [
                "deploy.nodes: 1 entries, but cluster.nodes is 2 (list every node once, the head "
                "first)"
            ],
        ),
        (
            ascend(nodes=nodes({"base": "10.197.90.10"}, {"base": "10.197.90.15"})),
            [
                "deploy.nodes[1].npu.base: NPU 0 address 10.197.90.15 and 2 more overlap "
                "deploy.nodes[0].npu NPU 5 (every NPU and node address must be unique)"
            ],
        ),
        (
            ascend(nodes=nodes({"base": "10.197.90.10"}, {"addresses": ["10.197.90.20"]})),
            [
                "deploy.nodes[1].npu.addresses: 1 addresses, but cluster.devices_per_node is 8 "
                "(one per NPU)"
            ],
        ),
        (
            ascend(nodes=nodes({"base": "10.197.90.10"}, {"base": "10.197.91.20"})),
            [
                "deploy.nodes[1].npu.gateway: 10.197.90.254 is outside the subnet of NPU 0 "
                "(10.197.91.0/24)"
            ],
        ),
        (
            ascend(nodes=nodes({"base": "10.197.90.10"}, {"base": "172.16.0.96"})),
            [
                "deploy.nodes[1].npu.base: NPU 5 address 172.16.0.101 and 1 more overlap "
                "deploy.nodes[0].address (every NPU and node address must be unique)",
                "deploy.nodes[1].npu.gateway: 10.197.90.254 is outside the subnet of NPU 0 "
                "(172.16.0.0/24)",
            ],
        ),
        (
            ascend(nodes=nodes({"base": "10.197.90.10"}, {"base": "10.197.90.248"})),
            [
                "deploy.nodes[1].npu.base: NPU 7 address 10.197.90.255 is not a host of "
                "10.197.90.0/24",
                "deploy.nodes[1].npu.gateway: 10.197.90.254 is also an NPU address",
            ],
        ),
        (
            ascend(
                nodes=nodes(
                    {"base": "10.197.90.10", "addresses": ["10.197.90.1"]}, {"base": "10.197.90.20"}
                )
            ),
            ["deploy.nodes[0].npu: give either `base` or `addresses`"],
        ),
        (
            ascend(
                nodes=[
                    {"name": "node01", "address": "172.16.0.101"},
                    {"name": "node01", "address": "172.16.0.102"},
                ]
            ),
            ["deploy: node name 'node01' appears twice in deploy.nodes"],
        ),
        (
            ascend(nodes=nodes({"base": "10.197.90.20"}, {"base": "10.197.90.10"})[::-1]),
            [
                "deploy.nodes[0].address: the first node is the Ray head, so it must be "
                "cluster.head 172.16.0.101 (got '172.16.0.102')"
            ],
        ),
        (
            {**ascend(), "models": [{**ascend()["models"][0], "parallel": {"tp": 6, "pp": 2}}]},
            [
                "models[0].parallel.tp: 6 does not divide cluster.devices_per_node 8, so 2 "
                "device(s) per node stay idle (use 1, 2, 4, 8)"
            ],
        ),
        (
            {**ascend(), "models": [{**ascend()["models"][0], "replicas": 2}]},
            [
                "models[0]: 2 replica(s) x tp 8 x pp 2 x dp 1 need 32 devices, the cluster has 16 "
                "(2 nodes x 8)"
            ],
        ),
        (
            ascend(kubernetes={"namespace": "Deep_Seek"}),
            [
                "deploy.kubernetes.namespace: String should match pattern "
                "'^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$' (got 'Deep_Seek')"
            ],
        ),
        (
            ascend(nodes=[{"name": "node01", "address": "172.16.0.999"}]),
            ["deploy.nodes[0].address: Input is not a valid IPv4 address (got '172.16.0.999')"],
        ),
    ],
    ids=[
        "node-count",
        "npu-overlap",
        "npu-count",
        "gateway-subnet",
        "npu-vs-node-address",
        "broadcast-and-gateway",
        "base-and-addresses",
        "duplicate-node",
        "head-not-first",
        "tp-idle-devices",
        "too-many-devices",
        "namespace",
        "bad-ip",
    ],
)
def test_deploy_mistakes_name_the_field(data: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        validate(data)
    assert info.value.problems == expected


def test_examples_and_cases_validate() -> None:
    for case in CASES.values():
        validate(case.data())


def test_local_configs_skip_layout_checks() -> None:
    # tp 3 on a 1-device local cluster is the planner's business, not the deploy section's.
    validate({"models": [{"name": "m", "parallel": {"tp": 3}}]})
