"""The compose bundle: `docker compose config` accepts it; one host gets engine containers
with their GPUs, several hosts get per-node Ray containers and serve.sh."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from deepfleet.deploy.plan import DeployError
from tests.deploy.conftest import CASES, compose_command, render, render_case, run


@pytest.mark.parametrize("name", ["r1-8x8-compose", "h200-1x8-compose"])
def test_docker_compose_config_accepts_it(name: str, tmp_path: Any) -> None:
    render_case(CASES[name]).write(tmp_path)
    done = run(
        [
            *compose_command(),
            "--project-directory",
            str(tmp_path),
            "-f",
            str(tmp_path / "compose.yaml"),
            "config",
            "--quiet",
        ]
    )
    assert done.returncode == 0, done.stderr


def test_compose_config_rejects_a_broken_file(tmp_path: Any) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: x\n    ports: 8000\n")
    done = run([*compose_command(), "-f", str(tmp_path / "compose.yaml"), "config", "--quiet"])
    assert done.returncode != 0


def compose_of(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load(render_case(CASES[name]).files["compose.yaml"])
    assert isinstance(loaded, dict)
    return loaded


def test_one_host_engines_get_their_gpus() -> None:
    services = compose_of("h200-1x8-compose")["services"]
    engines = {k: v for k, v in services.items() if k.startswith("engine-")}
    assert list(engines) == [
        "engine-r1-distill-32b-0",
        "engine-r1-distill-7b-0",
        "engine-r1-distill-7b-1",
    ]
    ids = [
        e["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        for e in engines.values()
    ]
    assert ids == [["0", "1", "2", "3"], ["4", "5"], ["6", "7"]]
    first = engines["engine-r1-distill-32b-0"]
    assert first["image"] == "vllm/vllm-openai:v0.32.0"
    assert first["volumes"][0] == "/models:/models:ro"
    assert first["entrypoint"][first["entrypoint"].index("--tensor-parallel-size") + 1] == "4"
    assert services["gateway"]["depends_on"] == list(engines)
    assert services["grafana"]["ports"] == ["127.0.0.1:3300:3000"]
    assert services["open-webui"]["environment"]["OPENAI_API_BASE_URL"] == (
        "http://gateway:8000/v1"
    )


def test_gateway_state_lists_every_engine() -> None:
    bundle = render_case(CASES["h200-1x8-compose"])
    state = json.loads(bundle.files["gateway/fleet.json"])
    assert [(r["replica_id"], r["url"], r["state"]) for r in state["replicas"]] == [
        ("r1-distill-32b-0", "http://engine-r1-distill-32b-0:8100", "ready"),
        ("r1-distill-7b-0", "http://engine-r1-distill-7b-0:8101", "ready"),
        ("r1-distill-7b-1", "http://engine-r1-distill-7b-1:8102", "ready"),
    ]
    assert [(m["name"], m["routing"]) for m in state["models"]] == [
        ("r1-distill-32b", "round_robin"),
        ("r1-distill-7b", "least_load"),
    ]
    # The gateway reads it with the fleet state reader.
    from deepfleet.fleet.state import FleetState

    assert len(FleetState.from_json(state).replicas) == 3
    prometheus = yaml.safe_load(bundle.files["prometheus/prometheus.yml"])
    targets = [c["targets"][0] for c in prometheus["scrape_configs"][1]["static_configs"]]
    assert targets == [
        "engine-r1-distill-32b-0:8100",
        "engine-r1-distill-7b-0:8101",
        "engine-r1-distill-7b-1:8102",
    ]


def test_multi_host_nodes_and_serve() -> None:
    bundle = render_case(CASES["r1-8x8-compose"])
    nodes = sorted(p for p in bundle.files if p.startswith("nodes/"))
    assert nodes == [f"nodes/{i:02d}-node0{i + 1}.sh" for i in range(8)]
    head, last = bundle.files[nodes[0]], bundle.files[nodes[-1]]
    assert "--head --port=6379" in head and "HEAD_IP=" not in head
    assert "HEAD_IP=10.0.0.1\nNODE_IP=10.0.0.8\nNIC=eth1\n" in last
    assert "--address=${HEAD_IP}:6379" in last
    assert '-e "GLOO_SOCKET_IFNAME=${NIC}"' in last
    assert "compose.yaml" in bundle.files and "engine-" not in bundle.files["compose.yaml"]
    state = json.loads(bundle.files["gateway/fleet.json"])
    assert [r["url"] for r in state["replicas"]] == ["http://10.0.0.1:8100"]
    assert "--distributed-executor-backend ray" in bundle.files["serve.sh"]


def test_compose_refuses_non_vllm_engines() -> None:
    data = CASES["ascend-2x8-mindie"].data()
    with pytest.raises(DeployError) as info:
        render("compose", data)
    assert info.value.problems == [
        "models: the compose target runs the official vLLM image; engine(s) mindie need "
        "`deepfleet render ascend` or `deepfleet up`"
    ]


def test_multi_host_needs_the_node_list() -> None:
    data = CASES["r1-8x8-compose"].data()
    del data["deploy"]["nodes"]
    with pytest.raises(DeployError) as info:
        render("compose", data)
    assert info.value.problems == [
        "deploy.nodes: required for 8 nodes (name, address and NIC of each, the head first)"
    ]
