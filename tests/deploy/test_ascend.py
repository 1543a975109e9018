"""The Ascend bundle: hccn_tool lines for every NPU of every node from the address plan, the
rank table, the container with every davinci device, and what it refuses."""

from __future__ import annotations

import json

import pytest

from deepfleet.deploy.plan import DeployError, deploy_plan
from tests.deploy.conftest import CASES, config_of, render, render_case


def test_network_script_sets_every_npu() -> None:
    bundle = render_case(CASES["ascend-2x8-mindie"])
    node2 = bundle.files["nodes/01-node02/network.sh"]
    for n in range(8):
        assert f"hccn_tool -i {n} -ip -s address 10.197.90.{20 + n} netmask" in node2
        assert f'hccn_tool -i {n} -gateway -s gateway "${{GATEWAY}}"' in node2
        assert f'hccn_tool -i {n} -tls -s enable "${{TLS}}"' in node2
    assert "NETMASK=255.255.255.0\nGATEWAY=10.197.90.254\nTLS=0\n" in node2


def test_check_script_checks_links_addresses_and_peers() -> None:
    check = render_case(CASES["ascend-2x8-mindie"]).files["nodes/00-node01/check.sh"]
    assert "npu-smi info" in check
    assert [line for line in check.splitlines() if line.startswith("check_npu ")] == [
        f"check_npu {n} 10.197.90.{10 + n}" for n in range(8)
    ]
    assert [line for line in check.splitlines() if line.startswith("ping_npu ")] == [
        f"ping_npu {n} 10.197.90.{20 + n}" for n in range(8)
    ]
    assert 'hccn_tool -i "$1" -link -g' in check


def test_rank_table_lists_every_npu_in_rank_order() -> None:
    table = json.loads(render_case(CASES["ascend-2x8-mindie"]).files["rank_table.json"])
    assert table["server_count"] == "2" and table["status"] == "completed"
    devices = [d for s in table["server_list"] for d in s["device"]]
    assert [d["rank_id"] for d in devices] == [str(i) for i in range(16)]
    assert devices[8] == {"device_id": "0", "device_ip": "10.197.90.20", "rank_id": "8"}
    assert [s["server_id"] for s in table["server_list"]] == ["172.16.0.101", "172.16.0.102"]


@pytest.mark.parametrize("engine", ["mindie", "vllm-ascend"])
def test_container_gets_every_device_and_mount(engine: str) -> None:
    run = render_case(CASES[f"ascend-2x8-{engine}"]).files["nodes/01-node02/run.sh"]
    for n in range(8):
        assert f"--device=/dev/davinci{n} \\" in run
    for dev in ("davinci_manager", "hisi_hdc", "devmm_svm"):
        assert f"--device=/dev/{dev} \\" in run
    for mount in (
        "/usr/local/Ascend/driver:/usr/local/Ascend/driver:ro",
        "/etc/hccn.conf:/etc/hccn.conf:ro",
        "/usr/bin/hccn_tool:/usr/bin/hccn_tool:ro",
        "/var/log/npu/:/usr/slog",
        "/models:/models:ro",
    ):
        assert f"-v {mount} \\" in run
    assert "--shm-size 500g" in run and "--network host" in run


def test_mindie_node_environment() -> None:
    run = render_case(CASES["ascend-2x8-mindie"]).files["nodes/01-node02/run.sh"]
    assert "NODE_IP=172.16.0.102\n" in run
    assert '-e "MIES_CONTAINER_IP=${NODE_IP}"' in run
    assert "-e RANKTABLEFILE=/etc/deepfleet/rank_table.json" in run
    assert "-e WORLD_SIZE=16" in run and "mindieservice_daemon" in run


def test_vllm_ascend_runs_ray_and_hccl_variables() -> None:
    bundle = render_case(CASES["ascend-2x8-vllm-ascend"])
    head, worker = bundle.files["nodes/00-node01/run.sh"], bundle.files["nodes/01-node02/run.sh"]
    assert "--head --port=6379" in head and "--address=${HEAD_IP}:6379" in worker
    assert '-e "HCCL_IF_IP=${NODE_IP}"' in worker
    assert '-e "HCCL_SOCKET_IFNAME=${NIC}"' in worker and "NIC=enp189s0f0" in worker
    assert "-e HCCL_CONNECT_TIMEOUT=1800" in worker
    serve = bundle.files["serve.sh"]
    assert "--quantization ascend" in serve and "--pipeline-parallel-size 2" in serve


def test_planner_knows_910b_formats() -> None:
    # W8A8 fits 2 x 8 x 64 GB; BF16 (1.34 TB) does not.
    data = CASES["ascend-2x8-mindie"].data()
    plan = deploy_plan(config_of(data))
    assert plan.device.name == "Ascend-910B" and plan.models[0].weight_format == "int8"
    assert (plan.models[0].layout.tp, plan.models[0].layout.pp) == (8, 2)
    data["models"][0]["dtype"] = "bf16"
    with pytest.raises(DeployError) as info:
        deploy_plan(config_of(data))
    assert "does not fit the cluster" in info.value.problems[0]
    data["models"][0]["dtype"] = "fp8"
    with pytest.raises(DeployError) as info:
        deploy_plan(config_of(data))
    assert "no fp8 kernels" in info.value.problems[0]


def test_ascend_refuses_another_device() -> None:
    data = CASES["ascend-2x8-mindie"].data()
    data["cluster"]["device"] = "A100-80GB"
    with pytest.raises(DeployError) as info:
        render("ascend", data)
    assert info.value.problems == [
        "cluster.device: A100-80GB is not an Ascend NPU (use Ascend-910B)"
    ]


def test_ascend_needs_every_npu_plan() -> None:
    data = CASES["ascend-2x8-mindie"].data()
    del data["deploy"]["nodes"][1]["npu"]
    with pytest.raises(DeployError) as info:
        render("ascend", data)
    assert info.value.problems == ["deploy.nodes[1].npu: required (the address plan of its NPUs)"]


def test_mindie_runs_one_replica() -> None:
    data = CASES["ascend-2x8-mindie"].data()
    data["models"][0] |= {
        "source": "/models/deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "name": "r1-8b",
        "dtype": "bf16",
        "replicas": 2,
        "parallel": {"tp": 8, "pp": 1},
    }
    with pytest.raises(DeployError) as info:
        render("ascend", data)
    assert info.value.problems == [
        "models: MindIE runs one replica of one model over the nodes (its multi-node mode)"
    ]
