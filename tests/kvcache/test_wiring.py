"""The controller hands fleet.yaml's `kv_cache:` on: routing knobs to the gateway (through
kv_routing.json beside the state file) and offload arguments to the vLLM engines it starts."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, cast

import pytest

from deepfleet.config.kvcache import KV_ROUTING_FILE, read_routing_spec
from deepfleet.config.schema import FleetConfig
from deepfleet.engines.base import LaunchSpec, ReplicaPlan
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.state import STATE_FILE, read_state
from deepfleet.fleet.supervisor import Supervisor
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds
from deepfleet.routing.policies.kv_aware import KvAware

ROUTING = {
    "scorers": {"prefix": 5.0, "load": 1.0},
    "spill_abs": 7,
    "pending_ttl_s": 12.0,
    "prefix_tokens": 64,
}


def fleet(engine: str, kv_cache: dict[str, Any]) -> tuple[FleetConfig, list[ReplicaPlan]]:
    cfg = FleetConfig.model_validate(
        {
            "models": [{"name": "m", "engine": engine, "routing": "kv_aware", "replicas": 2,
                        "engine_env": {"LMCACHE_CHUNK_SIZE": "512"}}],
            "kv_cache": kv_cache,
        }
    )  # fmt: skip
    plans = [
        ReplicaPlan(cfg.models[0], f"m-{i}", "/models/m", "127.0.0.1", 9000 + i, 9100 + i)
        for i in range(2)
    ]
    return cfg, plans


def launches(controller: Controller) -> list[LaunchSpec]:
    """The command lines the controller's local supervisors will start."""
    return [cast(Supervisor, runner).spec for runner in controller.supervisors]


def test_routing_section_and_policy_reach_the_gateway(tmp_path: Path) -> None:
    cfg, plans = fleet("vllm-cpu", {"routing": ROUTING})
    controller = Controller(cfg, tmp_path, plans)
    controller.publish()
    written = json.loads((tmp_path / KV_ROUTING_FILE).read_text())
    assert {k: written[k] for k in ROUTING} == ROUTING
    assert not list(tmp_path.glob(".*.tmp"))  # written by rename
    state = read_state(tmp_path / STATE_FILE)
    assert state is not None and [(m.name, m.routing) for m in state.models] == [("m", "kv_aware")]
    # What a gateway worker builds from the state file: the fleet's knobs in its policy.
    spec = read_routing_spec(tmp_path)
    assert spec == cfg.kv_cache.routing
    table = EndpointTable(tmp_path / STATE_FILE)
    feeds = RoutingFeeds(table, spec.model_dump())
    assert table.refresh()
    policy = feeds.router.policy("m")
    assert isinstance(policy, KvAware)
    assert policy.profile.weights == {"prefix": 5.0, "load": 1.0}
    assert policy.spill.spill_abs == 7


@pytest.fixture(scope="module")
def vllm_parser() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli_args = pytest.importorskip("vllm.entrypoints.launchers.cli_args")
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        return cli_args.make_arg_parser(FlexibleArgumentParser())


@pytest.mark.parametrize("offload", ["cpu", "lmcache"])
def test_gpu_engines_get_the_offload_arguments(
    tmp_path: Path, vllm_parser: Any, offload: str
) -> None:
    cfg, plans = fleet("vllm", {"offload": offload, "cpu_gib": 4})
    controller = Controller(cfg, tmp_path, plans)
    assert controller.notes == []
    for spec in launches(controller):
        args = vllm_parser.parse_args(spec.argv[3:])  # after `python -m module`
        assert args.kv_transfer_config.kv_role == "kv_both"
        if offload == "lmcache":
            assert args.kv_transfer_config.kv_connector == "LMCacheConnectorV1"
            assert spec.env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "4"
            assert spec.env["LMCACHE_CHUNK_SIZE"] == "512"  # the model's engine_env wins
        else:
            assert args.kv_transfer_config.kv_connector == "OffloadingConnector"


def test_a_models_engine_args_override_the_generated_config(tmp_path: Path) -> None:
    cfg, plans = fleet("vllm", {"offload": "cpu", "cpu_gib": 4})
    mine = {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    cfg.models[0].engine_args["kv_transfer_config"] = mine
    plans = [ReplicaPlan(cfg.models[0], "m-0", "/models/m", "127.0.0.1", 9000)]
    (spec,) = launches(Controller(cfg, tmp_path, plans))
    argv = spec.argv
    values = [argv[i + 1] for i, a in enumerate(argv) if a == "--kv-transfer-config"]
    assert [json.loads(v) for v in values] == [mine]


def test_cpu_engines_start_without_offload_and_say_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, plans = fleet("vllm-cpu", {"offload": "cpu", "cpu_gib": 4})
    with caplog.at_level(logging.WARNING):
        controller = Controller(cfg, tmp_path, plans)
    assert all("--kv-transfer-config" not in spec.argv for spec in launches(controller))
    (note,) = controller.notes
    assert note.startswith("kv_cache.offload: 'cpu' needs an engine that can offload")
    assert "'m'" in note
    assert note in caplog.text
