"""Local mode starts a disaggregated model's prefill and decode pools: each replica with its
role (fleet state, the gateway's two-phase path), its role's engine arguments as vLLM's own
parser reads them, the shared-storage folder in the state dir on the CPU build, and a NIXL
side-channel port of its own on GPUs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepfleet.cli.live import _replica_json, fleet_table
from deepfleet.config import FleetConfig
from deepfleet.config.load import validate
from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.launcher import LocalLauncher
from deepfleet.fleet.pools import NIXL_PORT_ENV, storage_dir
from deepfleet.fleet.replicas import MachineFacts, plan_local, replica_count
from deepfleet.fleet.state import FleetState, ReplicaStatus

GiB = 2**30
CPU_BOX = MachineFacts([0, 1], 16 * GiB, {"nvidia": [], "ascend": []})
FOUR_GPUS = MachineFacts([0, 1], 64 * GiB, {"nvidia": ["0", "1", "2", "3"], "ascend": []})
SMOL_PD = """
models:
  - name: smol
    disaggregation: {prefill: {replicas: 1}, decode: {replicas: 1}}
"""
GPU_PD = """
models:
  - name: q
    source: someone/q
    engine: vllm
    disaggregation:
      prefill: {replicas: 1, tensor_parallel_size: 2}
      decode: {replicas: 2}
"""


def config(text: str) -> FleetConfig:
    return validate(yaml.safe_load(text))


def parsed(vllm_parser: Any, plan: ReplicaPlan) -> Any:
    argv = get_adapter(plan.model.engine).launch_spec(plan).argv
    return vllm_parser.parse_args(argv[argv.index("--model") :])


def test_up_plans_both_pools_of_the_cpu_build_with_their_roles(
    tmp_path: Path, vllm_parser: Any
) -> None:
    cfg = config(SMOL_PD)
    launcher = LocalLauncher(CPU_BOX, state_dir=tmp_path)
    plans = launcher.plans(cfg, {"smol": "/m"})
    assert [(p.replica_id, p.role) for p in plans] == [
        ("smol-prefill-0", "prefill"),
        ("smol-decode-0", "decode"),
    ]
    assert [p.cpu_threads for p in plans] == ["0", "1"]  # one core each on a 2-core box
    folder = storage_dir(tmp_path, "smol")
    assert folder.is_dir()
    roles = []
    for plan in plans:
        kv = parsed(vllm_parser, plan).kv_transfer_config
        assert kv.kv_connector == "ExampleConnector"
        assert kv.kv_connector_extra_config == {"shared_storage_path": str(folder)}
        roles.append((kv.kv_role, kv.kv_load_failure_policy))
    assert roles == [("kv_producer", "fail"), ("kv_consumer", "recompute")]
    assert replica_count(cfg.models[0]) == 2


def test_gpu_pools_get_their_devices_layout_and_own_nixl_ports(vllm_parser: Any) -> None:
    cfg = config(GPU_PD)
    plans = plan_local(cfg, {"q": "/q"}, FOUR_GPUS)
    assert [p.replica_id for p in plans] == ["q-prefill-0", "q-decode-0", "q-decode-1"]
    assert [p.devices for p in plans] == [("0", "1"), ("2",), ("3",)]
    assert [p.tp for p in plans] == [2, 1, 1]
    ports = [p.env_defaults[NIXL_PORT_ENV] for p in plans]
    assert len(set(ports)) == 3, ports
    for plan in plans:
        args = parsed(vllm_parser, plan)
        assert args.kv_transfer_config.kv_connector == "NixlConnector"
        assert args.tensor_parallel_size == plan.tp
        env = get_adapter("vllm").launch_spec(plan).env
        assert env[NIXL_PORT_ENV] == plan.env_defaults[NIXL_PORT_ENV]


def test_a_model_engine_arg_still_wins_over_the_role_default(vllm_parser: Any) -> None:
    mine = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    text = GPU_PD + f"    engine_args: {{kv_transfer_config: {json.dumps(mine)}}}\n"
    plan = plan_local(config(text), {"q": "/q"}, FOUR_GPUS)[0]
    argv = get_adapter("vllm").launch_spec(plan).argv
    assert argv.count("--kv-transfer-config") == 1, shlex.join(argv)
    assert parsed(vllm_parser, plan).kv_transfer_config.kv_role == "kv_both"


def test_the_fleet_state_and_status_show_each_replicas_role(tmp_path: Path) -> None:
    cfg = config(SMOL_PD)
    launcher = LocalLauncher(CPU_BOX, state_dir=tmp_path)
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {"smol": "/m"}), launcher=launcher)
    state = controller.state
    assert [(r.replica_id, r.role) for r in state.replicas] == [
        ("smol-prefill-0", "prefill"),
        ("smol-decode-0", "decode"),
    ]
    controller.publish()
    saved = FleetState.from_json(json.loads((tmp_path / "fleet.json").read_text()))
    assert [r.role for r in saved.replicas] == ["prefill", "decode"]
    assert [_replica_json(r)["role"] for r in saved.replicas] == ["prefill", "decode"]
    table = fleet_table(saved)
    assert [c.header for c in table.columns].count("role") == 1


def test_aggregated_models_keep_their_names_and_no_role() -> None:
    cfg = config("models:\n  - {name: a, source: someone/a, engine: vllm, replicas: 2}\n")
    plans = plan_local(cfg, {"a": "/a"}, FOUR_GPUS)
    assert [(p.replica_id, p.role, p.env_defaults) for p in plans] == [
        ("a-0", "", {}),
        ("a-1", "", {}),
    ]
    status = ReplicaStatus("a-0", "a", "vllm", "http://x")
    assert _replica_json(status)["role"] is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("    parallel: {tp: 2}\n", "models[0].parallel: a disaggregated model"),
        ("kv_cache: {offload: cpu, cpu_gib: 4}\n", "kv_cache.offload cpu and the P/D"),
    ],
)
def test_config_check_refuses_what_the_launchers_cannot_start(extra: str, field: str) -> None:
    from deepfleet.config.load import ConfigError

    with pytest.raises(ConfigError) as err:
        config(GPU_PD + extra)
    assert field in str(err.value)
