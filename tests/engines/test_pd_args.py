"""Engine arguments of both P/D roles parse with vLLM's own parser (the installed 0.32) and
build the KVTransferConfig vLLM would run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepfleet.config.disagg import PoolSpec
from deepfleet.engines.vllm import PD_CONNECTORS, pd_engine_args

R1_DECODE = PoolSpec(data_parallel_size=8, expert_parallel=True)
R1_PREFILL = PoolSpec(tensor_parallel_size=8, expert_parallel=True)


@pytest.mark.parametrize("connector", sorted(PD_CONNECTORS))
@pytest.mark.parametrize(("role", "pool"), [("prefill", R1_PREFILL), ("decode", R1_DECODE)])
def test_vllm_parses_both_roles(
    vllm_parser: Any, connector: str, role: str, pool: PoolSpec
) -> None:
    from vllm.config import KVTransferConfig

    argv = pd_engine_args(role, pool, connector, vendor="nvidia", storage="/srv/kv")
    args = vllm_parser.parse_args(["--model", "/models/r1", *argv])
    kv = args.kv_transfer_config
    kv = kv if isinstance(kv, KVTransferConfig) else KVTransferConfig(**json.loads(kv))
    assert kv.kv_connector == PD_CONNECTORS[connector]
    assert kv.is_kv_producer if role == "prefill" else kv.is_kv_consumer
    assert not (kv.is_kv_consumer if role == "prefill" else kv.is_kv_producer)
    assert args.enable_expert_parallel
    assert args.all2all_backend == (
        "deepep_low_latency" if role == "decode" else "deepep_high_throughput"
    )
    assert (args.tensor_parallel_size, args.data_parallel_size) == (
        pool.tensor_parallel_size,
        pool.data_parallel_size,
    )
    if connector == "shared-storage":
        assert kv.kv_connector_extra_config == {"shared_storage_path": "/srv/kv"}


def test_decode_recomputes_when_the_handle_is_gone(vllm_parser: Any) -> None:
    argv = pd_engine_args("decode", PoolSpec(), "nixl", vendor="nvidia")
    args = vllm_parser.parse_args(["--model", "/m", *argv])
    assert args.kv_transfer_config.kv_load_failure_policy == "recompute"


def test_ascend_and_cpu_get_no_deepep(vllm_parser: Any) -> None:
    for vendor in ("huawei", "cpu"):
        argv = pd_engine_args("decode", R1_DECODE, "mooncake", vendor=vendor)  # type: ignore[arg-type]
        assert "--all2all-backend" not in argv
        args = vllm_parser.parse_args(["--model", "/m", *argv])
        assert args.enable_expert_parallel and args.data_parallel_size == 8
