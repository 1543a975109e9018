"""vllm-ascend and MindIE adapters: arguments and environment from the replica plan."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

from deepfleet.config import ModelSpec
from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.engines.mindie import CONFIG_ENV, MindieAdapter
from deepfleet.engines.vllm_ascend import node_env


def plan(engine: str, **model: Any) -> ReplicaPlan:
    extra = {k: model.pop(k) for k in ("tp", "pp", "engine_defaults") if k in model}
    spec = ModelSpec(
        name=model.pop("name", "deepseek-r1"),
        engine=engine,
        source=model.pop("source", "/models/DeepSeek-R1-W8A8"),
        **model,
    )
    return ReplicaPlan(
        model=spec,
        replica_id="deepseek-r1-0",
        model_path=spec.source,
        host="172.16.0.101",
        port=8100,
        max_model_len=16384,
        max_num_seqs=48,
        gpu_memory_utilization=0.9,
        **extra,
    )


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_registered() -> None:
    assert get_adapter("vllm-ascend").name == "vllm-ascend"
    assert get_adapter("mindie").name == "mindie"


def test_vllm_ascend_w8a8_multi_node() -> None:
    spec = get_adapter("vllm-ascend").launch_spec(
        plan(
            "vllm-ascend",
            dtype="w8a8",
            tp=8,
            pp=2,
            engine_env={"HCCL_BUFFSIZE": "512"},
            engine_defaults={"enable_expert_parallel": True},
        )
    )
    assert flag(spec.argv, "--quantization") == "ascend"
    assert flag(spec.argv, "--tensor-parallel-size") == "8"
    assert spec.env["HCCL_CONNECT_TIMEOUT"] == "1800"
    assert spec.env["HCCL_BUFFSIZE"] == "512"  # the config's engine_env wins
    assert spec.env["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"


def test_vllm_ascend_bf16_single_node() -> None:
    spec = get_adapter("vllm-ascend").launch_spec(plan("vllm-ascend", dtype="bf16", tp=8))
    assert "--quantization" not in spec.argv
    assert "HCCL_CONNECT_TIMEOUT" not in spec.env and "HCCL_BUFFSIZE" not in spec.env


def test_vllm_ascend_arguments_parse_with_vllm() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        parser = make_arg_parser(FlexibleArgumentParser())
    argv = get_adapter("vllm-ascend").launch_spec(plan("vllm-ascend", dtype="w8a8", tp=8)).argv
    args = parser.parse_args(argv[3:])
    assert (args.quantization, args.tensor_parallel_size) == ("ascend", 8)


def test_node_env() -> None:
    assert node_env("10.0.0.2", "eth1") == {
        "HCCL_IF_IP": "10.0.0.2",
        "VLLM_HOST_IP": "10.0.0.2",
        "HCCL_SOCKET_IFNAME": "eth1",
        "GLOO_SOCKET_IFNAME": "eth1",
        "TP_SOCKET_IFNAME": "eth1",
    }


def test_mindie_config_from_the_plan() -> None:
    p = plan(
        "mindie",
        tp=8,
        pp=2,
        trust_remote_code=True,
        engine_defaults={"max_num_batched_tokens": 4096},
    )
    spec = get_adapter("mindie").launch_spec(p)
    config = json.loads(spec.env[CONFIG_ENV])
    assert config == MindieAdapter().config(p)
    server, backend = config["ServerConfig"], config["BackendConfig"]
    assert (server["ipAddress"], server["port"], server["httpsEnabled"]) == (
        "172.16.0.101",
        8100,
        False,
    )
    assert backend["npuDeviceIds"] == [list(range(8))] and backend["multiNodesInferEnabled"]
    model = backend["ModelDeployConfig"]["ModelConfig"][0]
    assert (model["modelName"], model["modelWeightPath"], model["worldSize"]) == (
        "deepseek-r1",
        "/models/DeepSeek-R1-W8A8",
        8,
    )
    assert model["trustRemoteCode"] is True
    schedule = backend["ScheduleConfig"]
    assert (schedule["maxBatchSize"], schedule["maxPrefillTokens"]) == (48, 16384)
    assert backend["ModelDeployConfig"]["maxSeqLen"] == 16384
    assert spec.env["WORLD_SIZE"] == "16" and spec.env["NPU_MEMORY_FRACTION"] == "0.90"
    assert spec.argv[:2] == ["/bin/bash", "-c"] and "mindieservice_daemon" in spec.argv[2]
    assert spec.env["MIES_CONFIG_JSON_PATH"] in {"/tmp/deepfleet-mindie-deepseek-r1-0.json"}


def test_mindie_engine_args_override_by_name() -> None:
    config = MindieAdapter().config(
        plan("mindie", tp=8, engine_args={"maxBatchSize": 16, "npuMemSize": 40})
    )
    assert config["BackendConfig"]["ScheduleConfig"]["maxBatchSize"] == 16
    assert config["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0]["npuMemSize"] == 40
    with pytest.raises(ValueError, match=r"'max_batch' is not a MindIE config\.json field"):
        MindieAdapter().config(plan("mindie", tp=8, engine_args={"max_batch": 16}))
