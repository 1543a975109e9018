"""Every value in the rendered files comes from the config or the plan: change one, and the
output follows; and no address or image appears that the config does not hold."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.conftest import CASES, render

Edit = Callable[[dict[str, Any]], None]


def text_of(target: str, data: dict[str, Any]) -> str:
    bundle = render(target, data)
    return "\n".join(t for p, t in sorted(bundle.files.items()) if p != "fleet.yaml")


def set_path(path: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
        node[keys[-1]] = value

    return edit


# (case, edit, text expected before, text expected after instead)
MUTATIONS: list[tuple[str, str, Any, str, str]] = [
    (
        "r1-8x8-k8s",
        "deploy.kubernetes.namespace",
        "llm-prod",
        "namespace: deepseek",
        "namespace: llm-prod",
    ),
    ("r1-8x8-k8s", "deploy.kubernetes.name", "r1", "deepfleet-head-svc", "r1-head-svc"),
    (
        "r1-8x8-k8s",
        "deploy.images.deepfleet",
        "reg.local/df:2",
        "image: deepfleet:0.1.0",
        "image: reg.local/df:2",
    ),
    ("r1-8x8-k8s", "gateway.port", 9000, "port: 8000", "port: 9000"),
    ("r1-8x8-k8s", "deploy.shm_size_gib", 128, "sizeLimit: 64Gi", "sizeLimit: 128Gi"),
    (
        "r1-8x8-k8s",
        "deploy.model_dir",
        "/models/deepseek-ai",
        "mountPath: /models\n",
        "mountPath: /models/deepseek-ai\n",
    ),
    (
        "r1-8x8-k8s",
        "deploy.kubernetes.gpu_resource",
        "amd.com/gpu",
        "nvidia.com/gpu: '8'",
        "amd.com/gpu: '8'",
    ),
    (
        "r1-8x8-k8s",
        "deploy.kubernetes.load_gib_per_s",
        1.0,
        "failureThreshold: 145",
        "failureThreshold: 51",
    ),
    ("r1-8x8-k8s", "models.0.max_model_len", 8192, "max_model_len 16,384", "max_model_len 8,192"),
    (
        "r1-8x8-compose",
        "deploy.nodes.3.address",
        "10.0.9.4",
        "NODE_IP=10.0.0.4",
        "NODE_IP=10.0.9.4",
    ),
    ("r1-8x8-compose", "cluster.network.interface", "ib0", "NIC=eth0", "NIC=ib0"),
    ("r1-8x8-compose", "deploy.ray_port", 6380, "--port=6379", "--port=6380"),
    ("r1-8x8-compose", "deploy.engine_port", 9100, "--port 8100", "--port 9100"),
    (
        "r1-8x8-compose",
        "models.0.max_model_len",
        8192,
        "--max-model-len 16384",
        "--max-model-len 8192",
    ),
    (
        "r1-8x8-compose",
        "models.0.parallel",
        {"tp": 8, "pp": 8},
        "--pipeline-parallel-size 4",
        "--pipeline-parallel-size 8",
    ),
    (
        "r1-8x8-compose",
        "deploy.images.vllm",
        "vllm/vllm-openai:v9",
        "IMAGE=vllm/vllm-openai:v0.32.0",
        "IMAGE=vllm/vllm-openai:v9",
    ),
    ("r1-8x8-compose", "deploy.monitoring.prometheus_port", 9191, "9090:9090", "9191:9090"),
    ("r1-8x8-compose", "deploy.open_webui.port", 3333, "3000:8080", "3333:8080"),
    (
        "h200-1x8-compose",
        "models.1.routing",
        "power_of_two",
        '"routing": "least_load"',
        '"routing": "power_of_two"',
    ),
    (
        "ascend-2x8-mindie",
        "deploy.ascend.gateway",
        "10.197.90.1",
        "GATEWAY=10.197.90.254",
        "GATEWAY=10.197.90.1",
    ),
    (
        "ascend-2x8-mindie",
        "deploy.nodes.1.npu.base",
        "10.197.90.40",
        "10.197.90.27",
        "10.197.90.47",
    ),
    ("ascend-2x8-mindie", "deploy.ascend.tls", True, "TLS=0", "TLS=1"),
    (
        "ascend-2x8-mindie",
        "deploy.ascend.netmask",
        "255.255.0.0",
        "NETMASK=255.255.255.0",
        "NETMASK=255.255.0.0",
    ),
    ("ascend-2x8-mindie", "models.0.max_model_len", 8192, '"maxSeqLen":16384', '"maxSeqLen":8192'),
    ("ascend-2x8-vllm-ascend", "cluster.network.interface", "eth9", "NIC=enp189s0f0", "NIC=eth9"),
    (
        "ascend-2x8-vllm-ascend",
        "deploy.images.vllm_ascend",
        "my/vllm-ascend:1",
        "quay.io/ascend/vllm-ascend",
        "IMAGE=my/vllm-ascend:1",
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "before", "after"),
    MUTATIONS,
    ids=[f"{m[0]}:{m[1]}" for m in MUTATIONS],
)
def test_output_follows_the_config(
    case: str, path: str, value: Any, before: str, after: str
) -> None:
    c = CASES[case]
    data = c.data()
    original = text_of(c.target, data)
    assert before in original and after not in original
    set_path(path, value)(data)
    changed = text_of(c.target, data)
    assert before not in changed
    assert after in changed


IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")


def config_strings(data: Any) -> set[str]:
    if isinstance(data, dict):
        return {s for v in data.values() for s in config_strings(v)}
    if isinstance(data, list):
        return {s for v in data for s in config_strings(v)}
    return {str(data)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_address_comes_from_the_config(name: str) -> None:
    c = CASES[name]
    data = c.data()
    text = text_of(c.target, data)
    known = config_strings(data) | {"0.0.0.0", "127.0.0.1"}
    from deepfleet.config import validate

    cfg = validate(data)
    for node in cfg.deploy.nodes:  # NPU addresses expand from `base`
        if node.npu is not None:
            known |= {str(a) for a in node.npu.expand(cfg.cluster.devices_per_node)}
    found = set(IPV4.findall(text))
    assert found <= known, found - known


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_image_comes_from_the_config(name: str) -> None:
    c = CASES[name]
    from deepfleet.config import validate

    images = set(validate(c.data()).deploy.images.model_dump().values())
    text = text_of(c.target, c.data())
    used = set(re.findall(r"(?:image: |FROM |IMAGE=)(\S+)", text))
    assert used and used <= images, used - images
