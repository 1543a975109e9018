"""SGLang command lines: what we build, and that SGLang's own server-argument parser accepts it.

The parser tests need `sglang.srt.server_args` importable. CPU is enough: scripts/setup-test-deps.sh
installs SGLang and the three modules its parser imports with `--no-deps` into .cache/sglang (never
into the venv, whose torch and transformers vLLM pins); without it they are skipped.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deepfleet.config import ModelSpec
from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.engines.sglang import SERVER_MODULE


def plan(**kw: Any) -> ReplicaPlan:
    model = ModelSpec(
        name=kw.pop("name", "deepseek-r1"),
        engine="sglang",
        source="/models/DeepSeek-R1",
        kv_cache_dtype=kw.pop("kv_cache_dtype", None),
        trust_remote_code=kw.pop("trust_remote_code", False),
        engine_args=kw.pop("engine_args", {}),
        engine_env=kw.pop("engine_env", {}),
    )
    return ReplicaPlan(model=model, replica_id="r-0", model_path="/models/DeepSeek-R1",
                       host="10.0.0.1", port=9000, **kw)  # fmt: skip


R1_DP = plan(tp=2, max_model_len=16384, max_num_seqs=64, gpu_memory_utilization=0.85,
              kv_cache_dtype="fp8_e4m3", trust_remote_code=True,
              engine_defaults={"max_num_batched_tokens": 8192, "data_parallel_size": 4,
                               "enable_expert_parallel": True,
                               "distributed_executor_backend": "ray"})  # fmt: skip
SMALL = plan(name="qwen", engine_args={"page_size": 16, "enable_metrics": False,
                                       "schedule_policy": "lpm"})  # fmt: skip


def test_r1_argv_translates_the_planners_vllm_hints() -> None:
    argv = get_adapter("sglang").launch_spec(R1_DP).argv
    assert argv[:3] == ["python3", "-m", SERVER_MODULE]
    joined = " ".join(argv)
    for part in ("--model-path /models/DeepSeek-R1", "--served-model-name deepseek-r1",
                 "--host 10.0.0.1", "--port 9000", "--context-length 16384",
                 "--max-running-requests 64", "--mem-fraction-static 0.850",
                 "--kv-cache-dtype fp8_e4m3", "--reasoning-parser deepseek-r1",
                 "--chunked-prefill-size 8192", "--tp-size 8", "--dp-size 4",
                 "--enable-dp-attention", "--ep-size 8", "--enable-metrics"):  # fmt: skip
        assert part in joined
    assert argv.count("--tp-size") == 1
    assert "--distributed-executor-backend" not in argv and "--max-num-batched-tokens" not in argv


def test_engine_args_win_and_false_leaves_a_switch_off() -> None:
    spec = get_adapter("sglang").launch_spec(SMALL)
    assert "--enable-metrics" not in spec.argv and "--no-enable-metrics" not in spec.argv
    assert spec.argv[-4:] == ["--page-size", "16", "--schedule-policy", "lpm"]


def test_environment_is_the_offload_defaults_under_the_models_own() -> None:
    p = plan(engine_env={"A": "mine"})
    env = get_adapter("sglang").launch_spec(replace(p, env_defaults={"A": "x", "B": "y"})).env
    assert env == {"A": "mine", "B": "y"}


SGLANG_TARGET = Path(__file__).parents[2] / ".cache" / "sglang"


@pytest.fixture(scope="module")
def prepare() -> Any:
    if SGLANG_TARGET.is_dir() and str(SGLANG_TARGET) not in sys.path:
        sys.path.append(str(SGLANG_TARGET))
    server_args = pytest.importorskip(
        "sglang.srt.server_args", reason="sglang is not installed (pip install --no-deps sglang)"
    )
    return server_args.prepare_server_args


@pytest.mark.parametrize("replica", [R1_DP, SMALL], ids=["r1-tp2-dp4", "small"])
def test_sglang_parser_accepts_our_arguments(prepare: Any, replica: ReplicaPlan) -> None:
    argv = get_adapter("sglang").launch_spec(replica).argv
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        args = prepare(argv[3:])
    finally:  # prepare_server_args configures the root logger
        root.setLevel(level)
        root.handlers[:] = handlers
    assert args.model_path == "/models/DeepSeek-R1"
    assert args.port == 9000 and args.host == "10.0.0.1"
    assert args.served_model_name == replica.model.name
    if replica is R1_DP:
        assert (args.tp_size, args.dp_size, args.ep_size) == (8, 4, 8)
        assert args.enable_dp_attention and args.enable_metrics
        assert args.context_length == 16384 and args.max_running_requests == 64
        assert args.mem_fraction_static == pytest.approx(0.85)
        assert args.reasoning_parser == "deepseek-r1" and args.kv_cache_dtype == "fp8_e4m3"
        assert args.chunked_prefill_size == 8192
    else:
        assert args.page_size == 16 and args.schedule_policy == "lpm"
        assert not args.enable_metrics
