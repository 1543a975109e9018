"""KV offloading arguments: what the adapters give, that vLLM's own parser and config classes
accept them, and that planning them leaves the models as configured."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from deepfleet.config.kvcache import DiskTier, KvCacheSpec, RemoteTier
from deepfleet.config.schema import ModelSpec
from deepfleet.engines import ReplicaPlan, engine_flags, get_adapter, known_engines
from deepfleet.engines.base import KvOffload
from deepfleet.engines.offload import offload_plans, offloading_engines, shared_store_launch

CASES = {
    "native-cpu": KvCacheSpec(offload="cpu", cpu_gib=32),
    "lmcache-cpu": KvCacheSpec(offload="lmcache", cpu_gib=16),
    "lmcache-disk-remote": KvCacheSpec(
        offload="lmcache",
        cpu_gib=8,
        disk=DiskTier(path=Path("/nvme/lmc"), gib=100),
        remote=RemoteTier(kind="lmcache"),
    ),
    "lmcache-redis": KvCacheSpec(
        offload="lmcache", cpu_gib=8, remote=RemoteTier(url="redis://10.0.0.5:6379")
    ),
}


def vllm_offload(spec: KvCacheSpec) -> KvOffload:
    offload = get_adapter("vllm").kv_offload(spec)
    assert offload is not None
    return offload


@pytest.fixture(scope="module")
def vllm_parser() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli_args = pytest.importorskip("vllm.entrypoints.launchers.cli_args")
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        return cli_args.make_arg_parser(FlexibleArgumentParser())


@pytest.mark.parametrize("name", CASES)
def test_vllm_parses_our_kv_transfer_config(vllm_parser: Any, name: str) -> None:
    from vllm.config import KVTransferConfig

    spec = CASES[name]
    offload = vllm_offload(spec)
    args = vllm_parser.parse_args(["--model", "/models/m", *engine_flags(offload.engine_args)])
    config = args.kv_transfer_config
    assert isinstance(config, KVTransferConfig)
    assert config.kv_role == "kv_both" and config.is_kv_transfer_instance
    if spec.offload == "cpu":
        assert config.kv_connector == "OffloadingConnector"
        assert config.kv_connector_extra_config == {"cpu_bytes_to_use": 32 << 30}
    else:
        assert config.kv_connector == "LMCacheConnectorV1"
        assert offload.env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == f"{spec.cpu_gib:g}"


def test_lmcache_tiers_become_environment() -> None:
    env = vllm_offload(CASES["lmcache-disk-remote"]).env
    assert env["LMCACHE_LOCAL_DISK"] == "file:///nvme/lmc/"
    assert env["LMCACHE_MAX_LOCAL_DISK_SIZE"] == "100"
    assert env["LMCACHE_REMOTE_URL"] == "lm://127.0.0.1:65432"
    assert vllm_offload(CASES["lmcache-redis"]).env["LMCACHE_REMOTE_URL"] == (
        "redis://10.0.0.5:6379"
    )
    assert get_adapter("vllm").kv_offload(CASES["lmcache-redis"], "redis://store:6379") == (
        KvOffload(
            vllm_offload(CASES["lmcache-redis"]).engine_args,
            {
                **vllm_offload(CASES["lmcache-redis"]).env,
                "LMCACHE_REMOTE_URL": "redis://store:6379",
            },
        )
    )


def test_the_fleet_starts_its_own_store_only_without_url() -> None:
    argv = shared_store_launch(CASES["lmcache-disk-remote"], python="py")
    assert argv == ["py", "-m", "lmcache.v1.server", "127.0.0.1", "65432"]
    assert shared_store_launch(CASES["lmcache-redis"]) is None
    redis = KvCacheSpec(offload="lmcache", cpu_gib=1, remote=RemoteTier(kind="redis", port=7000))
    assert (shared_store_launch(redis) or [])[:5] == [
        "redis-server", "--bind", "127.0.0.1", "--port", "7000"
    ]  # fmt: skip


@pytest.mark.parametrize("engine", known_engines())
def test_only_vllm_on_gpus_offloads_and_nothing_without_offload(engine: str) -> None:
    assert get_adapter(engine).kv_offload(KvCacheSpec()) is None
    offloads = get_adapter(engine).kv_offload(CASES["native-cpu"]) is not None
    assert offloads == (engine == "vllm")
    assert offloading_engines(CASES["native-cpu"]) == ["vllm"]


def plan(engine: str, env: dict[str, str]) -> ReplicaPlan:
    model = ModelSpec(name="m", engine=engine, source="/models/m", engine_env=env)
    return ReplicaPlan(model=model, replica_id="m-0", model_path="/models/m", host="h", port=1)


def test_plans_carry_the_arguments_and_the_model_stays_as_configured() -> None:
    mine = {"LMCACHE_CHUNK_SIZE": "512"}
    gpu, cpu = plan("vllm", mine), plan("vllm-cpu", {})
    (out_gpu, out_cpu), notes = offload_plans([gpu, cpu], CASES["lmcache-cpu"])
    assert out_gpu.model is gpu.model and gpu.model.engine_env == mine
    assert out_gpu.engine_defaults["kv_transfer_config"]["kv_connector"] == "LMCacheConnectorV1"
    assert out_gpu.env_defaults["LMCACHE_LOCAL_CPU"] == "True"
    env = get_adapter("vllm").launch_spec(out_gpu).env
    assert env["LMCACHE_CHUNK_SIZE"] == "512" and env["LMCACHE_LOCAL_CPU"] == "True"
    assert out_cpu == cpu
    (note,) = notes
    assert "model 'm' runs on vllm-cpu" in note and "(vllm)" in note
    assert offload_plans([gpu], KvCacheSpec()) == ([gpu], [])
