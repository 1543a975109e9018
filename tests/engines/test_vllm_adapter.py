"""vLLM command lines: what we build, and that vLLM's own parser accepts it."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

from deepfleet.config import ModelSpec
from deepfleet.engines import ReplicaPlan, engine_flags, get_adapter


def plan(**model: Any) -> ReplicaPlan:
    extra = {
        k: model.pop(k)
        for k in ("tp", "pp", "cpu_kv_cache_gib", "cpu_threads", "engine_defaults")
        if k in model
    }
    spec = ModelSpec(name=model.pop("name", "m"), **model)
    return ReplicaPlan(
        model=spec,
        replica_id="m-0",
        model_path="/models/m",
        host="127.0.0.1",
        port=9000,
        kv_events_port=9001,
        python="python3",
        **extra,
    )


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        ({"enable_chunked_prefill": True}, ["--enable-chunked-prefill"]),
        ({"enable_chunked_prefill": False}, ["--no-enable-chunked-prefill"]),
        ({"max_num_seqs": 8}, ["--max-num-seqs", "8"]),
        ({"compilation_config": {"level": 0}}, ["--compilation-config", '{"level":0}']),
        ({"allowed_origins": ["a", "b"]}, ["--allowed-origins", "a", "b"]),
        ({"seed": None}, []),
    ],
)
def test_engine_flags(args: dict[str, Any], flags: list[str]) -> None:
    assert engine_flags(args) == flags


def test_cpu_replica_command_and_env() -> None:
    spec = get_adapter("vllm-cpu").launch_spec(
        plan(
            engine="vllm-cpu",
            cpu_kv_cache_gib=1.5,
            cpu_threads="0",
            engine_defaults={"dtype": "float32"},
        )
    )
    argv = spec.argv
    assert argv[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag_value(argv, "--served-model-name") == "m"
    assert flag_value(argv, "--host") == "127.0.0.1"
    assert "--enable-prefix-caching" in argv and "--enforce-eager" in argv
    assert flag_value(argv, "--dtype") == "float32"
    events = json.loads(flag_value(argv, "--kv-events-config"))
    assert events["endpoint"] == "tcp://127.0.0.1:9001" and events["enable_kv_cache_events"]
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "1.5"
    assert spec.env["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert "--trust-remote-code" not in argv


def test_user_args_override_defaults() -> None:
    argv = (
        get_adapter("vllm-cpu")
        .launch_spec(
            plan(
                engine="vllm-cpu",
                engine_args={
                    "no_enable_prefix_caching": None,
                    "enable_prefix_caching": False,
                    "dtype": "bfloat16",
                },
                engine_defaults={"dtype": "float32"},
            )
        )
        .argv
    )
    assert "--enable-prefix-caching" not in argv and "--no-enable-prefix-caching" in argv
    assert flag_value(argv, "--dtype") == "bfloat16" and argv.count("--dtype") == 1


def test_r1_gets_reasoning_parser_and_parallel_flags() -> None:
    argv = (
        get_adapter("vllm")
        .launch_spec(
            plan(
                name="deepseek-r1",
                source="deepseek-ai/DeepSeek-R1",
                engine="vllm",
                tp=8,
                pp=2,
                trust_remote_code=True,
            )
        )
        .argv
    )
    assert flag_value(argv, "--reasoning-parser") == "deepseek_r1"
    assert flag_value(argv, "--tensor-parallel-size") == "8"
    assert flag_value(argv, "--pipeline-parallel-size") == "2"
    assert "--enforce-eager" not in argv and "--trust-remote-code" in argv


@pytest.fixture(scope="module")
def vllm_parser() -> Any:
    # Third-party import-time deprecation warnings are not ours to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        return make_arg_parser(FlexibleArgumentParser())


@pytest.mark.parametrize(
    "replica",
    [
        plan(
            engine="vllm-cpu",
            cpu_kv_cache_gib=1,
            engine_defaults={"dtype": "float32"},
            max_model_len=4096,
        ),
        plan(
            name="deepseek-r1",
            source="deepseek-ai/DeepSeek-R1",
            engine="vllm",
            tp=8,
            pp=2,
            max_model_len=16384,
            kv_cache_dtype="fp8",
            engine_args={"enable_chunked_prefill": True, "max_num_batched_tokens": 8192},
        ),
    ],
    ids=["bundled-cpu", "r1-tp8-pp2"],
)
def test_vllm_parser_accepts_our_arguments(vllm_parser: Any, replica: ReplicaPlan) -> None:
    argv = get_adapter(replica.model.engine).launch_spec(replica).argv
    args = vllm_parser.parse_args(argv[3:])
    assert args.model == "/models/m"
    assert args.port == 9000
    assert args.served_model_name == [replica.model.name]
    assert args.enable_prefix_caching is True
    if replica.tp > 1:
        assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (8, 2)
        assert args.reasoning_parser == "deepseek_r1"
        assert args.kv_cache_dtype == "fp8"
