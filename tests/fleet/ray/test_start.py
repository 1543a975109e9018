"""`ray start` command lines and environments for head and worker nodes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deepfleet.fleet.ray.start import (
    NodeOptions,
    NodeStartError,
    choose_node_ip,
    ensure_token,
    node_ports,
    ray_start_command,
)


def test_head_defaults_are_safe() -> None:
    argv, env = ray_start_command(NodeOptions(head=True, node_ip="10.0.0.1", ray="ray"))
    assert argv[:4] == ["ray", "start", "--head", "--port=6379"]
    assert "--node-ip-address=10.0.0.1" in argv
    assert "--dashboard-host=127.0.0.1" in argv
    assert "--disable-usage-stats" in argv
    assert f"--object-store-memory={2 * 2**30}" in argv
    assert env == {
        "RAY_USAGE_STATS_ENABLED": "0",
        "VLLM_HOST_IP": "10.0.0.1",
        "RAY_memory_monitor_refresh_ms": "0",
    }


def test_worker_joins_with_nic_cores_token_and_fixed_ports(tmp_path: Path) -> None:
    o = NodeOptions(
        head=False, node_ip="10.0.0.2", join="10.0.0.1:6379", interface="eth0", cores="0-7",
        token_path=tmp_path / "t", port_base=7000, num_cpus=8, ray="ray",
    )  # fmt: skip
    argv, env = ray_start_command(o)
    assert "--address=10.0.0.1:6379" in argv and "--head" not in argv
    assert not any(a.startswith("--dashboard") and "agent" not in a for a in argv)
    assert {"--node-manager-port=7000", "--min-worker-port=7010", "--max-worker-port=7109"} <= set(
        argv
    )
    assert "--ray-client-server-port=7006" not in argv  # head only
    assert "--num-cpus=8" in argv
    for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):
        assert env[var] == "eth0"
    assert env["DEEPFLEET_NODE_CORES"] == "0-7"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "t")
    assert node_ports(o) == [7000, 7001, 7002, 7003, 7004, 7005]


def test_head_without_dashboard_and_its_ports() -> None:
    o = NodeOptions(head=True, node_ip="127.0.0.1", dashboard=False, port_base=7000, ray="ray")
    argv, _ = ray_start_command(o)
    assert "--include-dashboard=false" in argv and "--ray-client-server-port=7006" in argv
    assert node_ports(o)[0] == 6379


def test_neither_head_nor_join_is_refused() -> None:
    with pytest.raises(NodeStartError):
        ray_start_command(NodeOptions(head=False, node_ip="10.0.0.2"))


def test_node_ip_given_or_from_a_nic_that_exists() -> None:
    assert choose_node_ip("10.1.2.3", "eth9") == "10.1.2.3"
    assert choose_node_ip(None, "lo") == "127.0.0.1"
    with pytest.raises(NodeStartError, match="no-such-nic"):
        choose_node_ip(None, "no-such-nic")


def test_token_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "ray" / "token"
    assert ensure_token(path) is True
    first = path.read_text()
    assert len(first) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) is False and path.read_text() == first
