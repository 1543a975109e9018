"""Engine arguments for KV offloading: what we generate, and that vLLM's own parser and
config classes accept it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from deepfleet.config.kvcache import DiskTier, KvCacheSpec, RemoteTier
from deepfleet.config.schema import FleetConfig
from deepfleet.kvcache.offload import offload_args, shared_store_launch

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
    extras = offload_args(spec, "vllm")
    args = vllm_parser.parse_args(["--model", "/models/m", *extras.flags])
    config = args.kv_transfer_config
    assert isinstance(config, KVTransferConfig)
    assert config.kv_role == "kv_both" and config.is_kv_transfer_instance
    if spec.offload == "cpu":
        assert config.kv_connector == "OffloadingConnector"
        assert config.kv_connector_extra_config == {"cpu_bytes_to_use": 32 << 30}
    else:
        assert config.kv_connector == "LMCacheConnectorV1"
        assert extras.env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == f"{spec.cpu_gib:g}"


def test_lmcache_tiers_become_environment() -> None:
    env = offload_args(CASES["lmcache-disk-remote"], "vllm").env
    assert env["LMCACHE_LOCAL_DISK"] == "file:///nvme/lmc/"
    assert env["LMCACHE_MAX_LOCAL_DISK_SIZE"] == "100"
    assert env["LMCACHE_REMOTE_URL"] == "lm://127.0.0.1:65432"
    assert offload_args(CASES["lmcache-redis"], "vllm").env["LMCACHE_REMOTE_URL"] == (
        "redis://10.0.0.5:6379"
    )


def test_the_fleet_starts_its_own_store_only_without_url() -> None:
    argv = shared_store_launch(CASES["lmcache-disk-remote"], python="py")
    assert argv == ["py", "-m", "lmcache.v1.server", "127.0.0.1", "65432"]
    assert shared_store_launch(CASES["lmcache-redis"]) is None
    redis = KvCacheSpec(offload="lmcache", cpu_gib=1, remote=RemoteTier(kind="redis", port=7000))
    assert (shared_store_launch(redis) or [])[:5] == [
        "redis-server", "--bind", "127.0.0.1", "--port", "7000"
    ]  # fmt: skip


def test_cpu_engines_and_no_offload_get_nothing() -> None:
    assert offload_args(CASES["native-cpu"], "vllm-cpu").flags == []
    assert offload_args(KvCacheSpec(), "vllm").flags == []


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"offload": "cpu"}, "needs `cpu_gib`"),
        ({"offload": "none", "disk": {"path": "/x", "gib": 1}}, "need `offload: lmcache`"),
        ({"routing": {"spill_rel": 0.5}}, "greater than or equal to 1"),
        ({"offload": "gpu"}, "offload"),
    ],
)
def test_config_errors_name_the_fix(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FleetConfig.model_validate({"models": [{"name": "m"}], "kv_cache": section})


def test_routing_section_feeds_the_policies() -> None:
    cfg = FleetConfig.model_validate(
        {
            "models": [{"name": "m", "routing": "kv_aware"}],
            "kv_cache": {"routing": {"spill_abs": 3}},
        }
    )
    params = cfg.kv_cache.routing.policy_params("kv_aware")
    assert params["spill_abs"] == 3 and json.dumps(params)
