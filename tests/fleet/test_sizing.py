"""`deepfleet up` asks the planner: it fills what the config leaves out, keeps what it sets,
and refuses a config that cannot fit with the reason and the nearest alternatives."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from deepfleet.config import FleetConfig, default_config
from deepfleet.config.load import validate
from deepfleet.engines import get_adapter
from deepfleet.fleet.replicas import (
    InfeasibleConfig,
    MachineFacts,
    plan_local,
    size_fleet,
    size_model,
)

GiB = 2**30


def config(text: str) -> FleetConfig:
    return validate(yaml.safe_load(text))


R1_16_H200 = """
cluster: {mode: ray, nodes: 2, devices_per_node: 8, device: H200}
models:
  - name: r1
    source: deepseek-ai/DeepSeek-R1
    engine: vllm
"""


def test_fills_layout_context_and_engine_limits_when_left_out() -> None:
    s = size_model(config(R1_16_H200 + "    parallel: {tp: 8, pp: 2}\n"), 0)
    assert (s.replicas, s.tp, s.pp) == (1, 8, 2)
    assert s.max_model_len == 32768  # the planner's default context for R1
    assert s.max_num_seqs is not None and s.max_num_seqs > 1
    assert s.gpu_memory_utilization == pytest.approx(0.92)
    assert s.cpu_kv_cache_gib is None and s.layout == "tp 8 x pp 2 x1"


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ("    max_model_len: 8192\n", {"max_model_len": 8192}),
        ("    engine_args: {max_num_seqs: 7}\n", {"max_num_seqs": None}),
        ("    engine_args: {gpu_memory_utilization: 0.8}\n", {"gpu_memory_utilization": None}),
        ("    replicas: 1\n    parallel: {tp: 8, pp: 2}\n", {"replicas": 1, "tp": 8, "pp": 2}),
    ],
)
def test_keeps_what_the_config_sets(extra: str, expect: dict[str, Any]) -> None:
    """None: the planner leaves the engine flag to the config's engine_args."""
    s = size_model(config(R1_16_H200 + extra), 0)
    for key, value in expect.items():
        assert getattr(s, key) == value, key


def test_replicas_auto_takes_the_planners_count() -> None:
    cfg = config(R1_16_H200.replace("deepseek-ai/DeepSeek-R1", "DeepSeek-R1-Distill-Qwen-7B")
                 + "    replicas: auto\n")  # fmt: skip
    s = size_model(cfg, 0)
    assert s.replicas * s.tp * s.pp <= 16 and s.replicas > 1


def test_refuses_what_cannot_fit_with_reason_and_alternatives() -> None:
    cfg = config(
        R1_16_H200.replace("nodes: 2", "nodes: 1").replace("H200", "A100-40GB")
        + "    max_model_len: 16384\n"
    )
    with pytest.raises(InfeasibleConfig) as err:
        size_fleet(cfg)
    text = "\n".join(err.value.lines)
    assert "models[0] r1: does not fit on 1 node(s) x 8 A100-40GB" in text
    assert "weights need" in text  # the reason
    assert "nearest configurations that fit" in text and "nodes of 8 x A100-40GB" in text


def test_a_hub_model_outside_the_catalog_starts_as_configured() -> None:
    cfg = config("models:\n  - {name: x, source: someone/unknown-model, engine: vllm}\n")
    s = size_model(cfg, 0)
    assert (s.replicas, s.tp, s.pp, s.max_model_len, s.max_num_seqs) == (1, 1, 1, None, None)


@pytest.mark.parametrize(
    ("available", "replicas", "kv_gib"),
    [(24 * GiB, 1, 2), (24 * GiB, 2, 1), (8 * GiB, 1, 1)],
)
def test_local_cpu_sizes_kv_space_and_context(available: int, replicas: int, kv_gib: int) -> None:
    cfg = default_config()
    cfg.models[0].replicas = replicas
    plans = plan_local(cfg, {cfg.models[0].name: "/m"}, MachineFacts([0, 1], available))
    assert len(plans) == replicas
    for p in plans:
        assert p.cpu_kv_cache_gib == kv_gib
        assert p.max_model_len == 8192  # SmolLM2's whole context fits the KV space
        assert p.max_num_seqs is not None and p.max_num_seqs >= 5
        env = get_adapter("vllm-cpu").launch_spec(p).env
        assert env["VLLM_CPU_KVCACHE_SPACE"] == str(kv_gib)


def test_engine_env_kv_space_wins_and_the_planner_judges_it() -> None:
    cfg = default_config()
    cfg.models[0].engine_env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    cfg.models[0].max_model_len = 2048
    (p,) = plan_local(cfg, {cfg.models[0].name: "/m"}, MachineFacts([0, 1], 24 * GiB))
    assert p.cpu_kv_cache_gib is None and p.max_model_len == 2048
    assert get_adapter("vllm-cpu").launch_spec(p).env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_a_host_too_small_for_the_cpu_replicas_is_refused() -> None:
    cfg = default_config()
    cfg.models[0].replicas = 4
    with pytest.raises(InfeasibleConfig) as err:
        plan_local(cfg, {cfg.models[0].name: "/m"}, MachineFacts([0, 1], 8 * GiB))
    text = "\n".join(err.value.lines)
    assert "exceed the 2.0 GiB usable" in text
    assert "fewer CPU replicas: 4 share the 8.0 GiB free on a host" in text


def test_the_embedded_default_plans_fast() -> None:
    cfg = default_config()
    started = time.perf_counter()
    plan_local(cfg, {cfg.models[0].name: "/m"}, MachineFacts([0, 1], 20 * GiB))
    assert time.perf_counter() - started < 1.0


def test_a_fixed_layout_keeps_its_data_parallel_and_expert_parallel_flags() -> None:
    """`parallel: {dp: 8, ep: true}` reaches the engine as --data-parallel-size 8 and
    --enable-expert-parallel (they were dropped whenever the config fixed the layout)."""
    one_node = R1_16_H200.replace("nodes: 2", "nodes: 1")
    s = size_model(config(one_node + "    parallel: {tp: 1, dp: 8, ep: true}\n"), 0)
    assert dict(s.extra_args) == {"data_parallel_size": 8, "enable_expert_parallel": True}
    plain = size_model(config(R1_16_H200 + "    parallel: {tp: 8, pp: 2}\n"), 0)
    assert plain.extra_args == ()


def test_a_disaggregated_model_sizes_each_pool_with_its_own_layout() -> None:
    """Each pool is planned as a model of its shape: prefill TP 8, decode DP 8 with expert
    parallelism on one node each; the model's sizing counts both pools' replicas."""
    pd = (
        "    disaggregation:\n"
        "      prefill: {replicas: 1, tensor_parallel_size: 8, expert_parallel: true}\n"
        "      decode: {replicas: 1, data_parallel_size: 8, expert_parallel: true}\n"
    )
    (s,) = size_fleet(config(R1_16_H200 + pd))
    prefill, decode = s.pools
    assert (s.replicas, prefill.role, decode.role) == (2, "prefill", "decode")
    assert (prefill.tp, dict(prefill.extra_args)) == (8, {"enable_expert_parallel": True})
    assert (decode.tp, dict(decode.extra_args)) == (
        1,
        {"data_parallel_size": 8, "enable_expert_parallel": True},
    )
    assert s.pool_of(1) == (decode, 0)


def test_a_pool_that_does_not_fit_is_refused_under_its_field() -> None:
    """R1 on one H200 (a pool's default layout) does not fit: the line names the pool."""
    cfg = config(
        R1_16_H200 + "    disaggregation: {prefill: {replicas: 1}, decode: {replicas: 1}}\n"
    )
    with pytest.raises(InfeasibleConfig) as err:
        size_fleet(cfg)
    assert err.value.lines[0] == "models[0].disaggregation.prefill:"
    assert "models[0].disaggregation.decode:" in err.value.lines
