"""fleet.yaml `disaggregation:`: what `config check` refuses, naming the field, and what
`auto` picks per engine."""

from __future__ import annotations

from typing import Any

import pytest

from deepfleet.config.disagg import DisaggregationSpec, connector_for
from deepfleet.config.load import ConfigError, validate

R1 = "deepseek-ai/DeepSeek-R1"
DENSE = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
GPU_CLUSTER = {"mode": "ray", "nodes": 2, "devices_per_node": 8, "device": "H200"}


def config(engine: str, source: str, pd: dict[str, Any], **model: Any) -> dict[str, Any]:
    cluster = {} if engine == "vllm-cpu" else GPU_CLUSTER
    if engine == "vllm-ascend":
        cluster = {**GPU_CLUSTER, "device": "Ascend-910B"}
    entry = {"name": "m", "engine": engine, "source": source, "disaggregation": pd, **model}
    return {"cluster": cluster, "models": [entry]}


@pytest.mark.parametrize(
    ("engine", "source", "pd", "extra", "field"),
    [
        ("vllm-ascend", R1, {"connector": "nixl"}, {}, "disaggregation.connector: nixl"),
        ("vllm-cpu", "bundled", {"connector": "mooncake"}, {}, "connector: mooncake does"),
        ("vllm-cpu", "bundled", {"connector": "nixl"}, {}, "connector: nixl does not run"),
        ("vllm", DENSE, {"decode": {"expert_parallel": True}}, {}, "decode.expert_parallel"),
        ("vllm", DENSE, {"prefill": {"data_parallel_size": 2}}, {}, "prefill.data_parallel"),
        ("mindie", R1, {}, {}, "engine 'mindie' has no KV connector"),
        ("sglang", R1, {}, {}, "engine 'sglang' has no KV connector"),
        ("vllm", R1, {}, {"replicas": 2}, "models[0].replicas: a disaggregated model"),
        (
            "vllm",
            R1,
            {
                "prefill": {"replicas": 2, "tensor_parallel_size": 8},
                "decode": {"replicas": 1, "data_parallel_size": 8, "tensor_parallel_size": 1},
            },
            {},
            "= 24, the cluster has 16",
        ),
        ("vllm-cpu", "bundled", {"decode": {"tensor_parallel_size": 2}}, {}, "one rank"),
        (
            "vllm",
            R1,
            {"connector": "shared-storage"},
            {},
            "shared_storage_path: cluster.mode ray runs engines on several hosts",
        ),
        (
            "vllm",
            R1,
            {"connector": "nixl", "shared_storage_path": "/x"},
            {},
            "shared_storage_path: only",
        ),
    ],
)
def test_config_check_refuses_naming_the_field(
    engine: str, source: str, pd: dict[str, Any], extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as err:
        validate(config(engine, source, pd, **extra))
    assert any(field in line for line in err.value.problems), err.value.problems
    assert all(line.startswith("models[0]") for line in err.value.problems)


@pytest.mark.parametrize(
    ("engine", "source", "pd"),
    [
        ("vllm-cpu", "bundled", {}),
        ("vllm-cpu", "bundled", {"connector": "shared-storage", "shared_storage_path": "/tmp/k"}),
        (
            "vllm",
            R1,
            {
                "prefill": {"tensor_parallel_size": 8},
                "decode": {"data_parallel_size": 8, "expert_parallel": True},
            },
        ),
        ("vllm", DENSE, {"connector": "lmcache", "decode": {"replicas": 3}}),
        ("vllm-ascend", R1, {"connector": "mooncake", "prefill": {"expert_parallel": True}}),
    ],
)
def test_possible_combinations_pass(engine: str, source: str, pd: dict[str, Any]) -> None:
    cfg = validate(config(engine, source, pd))
    assert cfg.models[0].disaggregation is not None


@pytest.mark.parametrize(
    ("engine", "picked"),
    [("vllm", "nixl"), ("vllm-ascend", "mooncake"), ("vllm-cpu", "shared-storage")],
)
def test_auto_picks_per_platform(engine: str, picked: str) -> None:
    assert connector_for(engine, DisaggregationSpec()) == picked
    assert connector_for(engine, DisaggregationSpec(connector="lmcache")) == "lmcache"


def test_unknown_connector_is_a_schema_error() -> None:
    with pytest.raises(ConfigError) as err:
        validate(config("vllm", R1, {"connector": "rdma"}))
    assert err.value.problems[0].startswith("models[0].disaggregation.connector:")


def test_config_check_shows_the_pools(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from deepfleet.cli.main import app

    f = tmp_path / "fleet.yaml"
    f.write_text(
        "models:\n  - name: smol\n    disaggregation:\n"
        "      prefill: {replicas: 2}\n      decode: {replicas: 1}\n"
    )
    result = CliRunner().invoke(app, ["config", "check", "-f", str(f)])
    assert result.exit_code == 0, result.output
    assert "smol prefill x2 + decode x1 on vllm-cpu" in result.output
