"""`ray start` with safe defaults: the command line and environment for one node.

What deepfleet sets that a bare `ray start` leaves to chance:
- an explicit node IP (the config's NIC, or the one non-loopback address), not Ray's guess;
- the dashboard bound to 127.0.0.1 (or off), usage stats off;
- Ray's token authentication (RAY_AUTH_MODE=token) where the installed Ray has it;
- GLOO/NCCL/TP (and HCCL) socket NICs, so collectives use the configured interface;
- a bounded object store (the model weights never travel through it; /dev/shm stays free for
  NCCL and vLLM), and Ray's memory monitor off (it would kill supervisor actors);
- optionally fixed ports from one base, for firewalls and for several nodes on one host.
Ray still listens on every interface: the node IP picks what it advertises, not what it binds.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from deepfleet.fleet.ray.records import NodeRecord, living, snapshot, started_since

RAY_PORT = 6379
DASHBOARD_PORT = 8265
OBJECT_STORE_GIB = 2.0
DEFAULT_TEMP_DIR = "/tmp/ray"  # Ray's own default
START_TIMEOUT_S = 300
NIC_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "HCCL_SOCKET_IFNAME")
NODE_CORES_ENV = "DEEPFLEET_NODE_CORES"
# Offsets from --port-base; workers take the 100 ports from base + WORKER_PORTS_OFFSET.
PORT_OFFSETS = {
    "node-manager-port": 0,
    "object-manager-port": 1,
    "dashboard-agent-listen-port": 2,
    "dashboard-agent-grpc-port": 3,
    "metrics-export-port": 4,
    "runtime-env-agent-port": 5,
}
HEAD_PORT_OFFSETS = {"ray-client-server-port": 6}
WORKER_PORTS_OFFSET, WORKER_PORTS = 10, 100


class NodeStartError(ValueError):
    """The node cannot be started as asked; the message says what to give instead."""


class NodeSetupError(Exception):
    """This machine is not ready for a Ray node (Ray missing, no token, a node already
    running) or `ray start` failed; `output` holds the tail of what `ray start` printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class NodeOptions:
    head: bool
    node_ip: str
    join: str | None = None
    """HEAD:PORT of the cluster to join (worker nodes)."""
    port: int = RAY_PORT
    interface: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_bytes: int = int(OBJECT_STORE_GIB * 2**30)
    temp_dir: str | None = None
    dashboard: bool = True
    dashboard_port: int = DASHBOARD_PORT
    port_base: int | None = None
    cores: str | None = None
    token_path: Path | None = None
    """Token file for Ray's token authentication; None: authentication off."""
    ray: str = "ray"


def ipv4_of(interface: str) -> str | None:
    for addr in psutil.net_if_addrs().get(interface, []):
        if addr.family == socket.AF_INET:
            return str(addr.address)
    return None


def ipv4_interfaces() -> dict[str, str]:
    """Interface -> first IPv4 address, loopback excluded."""
    out: dict[str, str] = {}
    for name, addrs in psutil.net_if_addrs().items():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                out.setdefault(name, str(addr.address))
    return out


def choose_node_ip(node_ip: str | None, interface: str | None) -> str:
    """The address this node advertises: given, the NIC's, or the one non-loopback address."""
    if node_ip:
        return node_ip
    if interface:
        ip = ipv4_of(interface)
        if ip is None:
            have = ", ".join(f"{n} {a}" for n, a in ipv4_interfaces().items()) or "none"
            raise NodeStartError(
                f"interface {interface!r} has no IPv4 address on this node (IPv4 interfaces: "
                f"{have}); set cluster.network.interface or pass --interface / --node-ip"
            )
        return ip
    found = ipv4_interfaces()
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        return "127.0.0.1"
    listed = ", ".join(f"{n} {a}" for n, a in found.items())
    raise NodeStartError(
        f"this node has several addresses ({listed}); say which one the cluster uses with "
        f"--interface NIC (or cluster.network.interface) or --node-ip IP"
    )


def token_auth_supported() -> bool:
    """Ray's token authentication (RAY_AUTH_MODE=token) arrived in Ray 2.5x."""
    try:
        spec = importlib.util.find_spec("ray._private.authentication.authentication_token_setup")
    except ModuleNotFoundError:
        return False
    return spec is not None


def default_token_path() -> Path:
    """Ray's own default (~/.ray/auth_token), so `ray` commands find it too."""
    return Path.home() / ".ray" / "auth_token"


def ensure_token(path: Path) -> bool:
    """Create a token file (owner-only) when there is none; True if one was created."""
    if path.is_file() and path.read_text().strip():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32))
    return True


def ray_start_command(o: NodeOptions) -> tuple[list[str], dict[str, str]]:
    """The `ray start` argv and the environment variables to start it with."""
    argv = [o.ray, "start"]
    if o.head:
        argv += ["--head", f"--port={o.port}"]
    elif o.join:
        argv.append(f"--address={o.join}")
    else:
        raise NodeStartError("give --head, or --join HEAD:PORT")
    argv += [
        f"--node-ip-address={o.node_ip}",
        f"--object-store-memory={o.object_store_bytes}",
        "--disable-usage-stats",
    ]
    if o.head and o.dashboard:
        argv += ["--dashboard-host=127.0.0.1", f"--dashboard-port={o.dashboard_port}"]
    elif o.head:
        argv.append("--include-dashboard=false")
    if o.num_cpus is not None:
        argv.append(f"--num-cpus={o.num_cpus}")
    if o.num_gpus is not None:
        argv.append(f"--num-gpus={o.num_gpus}")
    if o.temp_dir:
        argv.append(f"--temp-dir={o.temp_dir}")
    if o.port_base is not None:
        offsets = {**PORT_OFFSETS, **(HEAD_PORT_OFFSETS if o.head else {})}
        argv += [f"--{name}={o.port_base + off}" for name, off in offsets.items()]
        low = o.port_base + WORKER_PORTS_OFFSET
        argv += [f"--min-worker-port={low}", f"--max-worker-port={low + WORKER_PORTS - 1}"]
    # Ray's memory monitor kills a worker when the host runs low; for deepfleet that is a
    # supervisor actor, which takes its engine with it. Leave real OOM to the kernel.
    env = {"RAY_USAGE_STATS_ENABLED": "0", "VLLM_HOST_IP": o.node_ip,
           "RAY_memory_monitor_refresh_ms": "0"}  # fmt: skip
    if o.interface:
        env |= dict.fromkeys(NIC_VARS, o.interface)
    if o.cores:
        env[NODE_CORES_ENV] = o.cores
    if o.token_path is not None:
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(o.token_path)}
    return argv, env


def node_ports(o: NodeOptions) -> list[int]:
    """Fixed ports this node listens on (for `deepfleet doctor` and firewall rules)."""
    ports = [o.port] if o.head else []
    if o.head and o.dashboard:
        ports.append(o.dashboard_port)
    if o.port_base is not None:
        offsets = {**PORT_OFFSETS, **(HEAD_PORT_OFFSETS if o.head else {})}
        ports += [o.port_base + off for off in offsets.values()]
    return ports


def ray_executable() -> str:
    """The `ray` beside this Python, else the one on PATH; NodeSetupError when neither."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise NodeSetupError(
            'Ray is not installed: pip install "deepfleet[ray]" (or "ray[default]")'
        )
    return found


def choose_token(
    head: bool, auth: bool, token_file: Path | None, create: bool
) -> tuple[Path | None, list[str]]:
    """The token file to use (None: authentication off) and notes for the person starting the
    node. The head creates one when there is none and `create` is set; a worker without the
    head's token raises NodeSetupError."""
    if not auth:
        return None, ["token authentication off (--no-auth): keep Ray's ports on a private network"]
    if not token_auth_supported():
        return None, [
            "this Ray has no token authentication: anyone who reaches its ports can run code "
            "here; keep them on a private network"
        ]
    path = (token_file or default_token_path()).expanduser()
    if head:
        made = ensure_token(path) if create else False
        return path, [f"token authentication on ({'new token in' if made else 'token'} {path})"]
    if create and not path.is_file():
        raise NodeSetupError(
            f"the cluster's token is not at {path}: copy the head's token file there "
            f"(or pass --token-file), or start every node with --no-auth"
        )
    return path, [f"token authentication on ({path})"]


def check_no_node(state_dir: Path) -> None:
    """NodeSetupError when a node deepfleet started from `state_dir` still runs."""
    previous = NodeRecord.load(state_dir)
    if previous is not None and living(previous.processes):
        raise NodeSetupError(
            f"a Ray {previous.role} node started by deepfleet runs from {state_dir} "
            f"({previous.address}); stop it with `deepfleet node stop` first"
        )


def start_node(o: NodeOptions, state_dir: Path) -> NodeRecord:
    """Run `ray start` for `o` and record the processes it left running in `state_dir`, so
    `deepfleet node stop` stops exactly this node. NodeSetupError when `ray start` fails."""
    argv, env = ray_start_command(o)
    before = snapshot()
    done = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=START_TIMEOUT_S
    )
    if done.returncode != 0:
        raise NodeSetupError(
            f"`ray start` failed (exit {done.returncode}); see above",
            (done.stdout + done.stderr).strip()[-3000:],
        )
    tmp = o.temp_dir or DEFAULT_TEMP_DIR
    record = NodeRecord(
        role="head" if o.head else "worker",
        address=f"{o.node_ip}:{o.port}" if o.head else str(o.join),
        node_ip=o.node_ip,
        temp_dir=tmp,
        token_path=str(o.token_path) if o.token_path else None,
        processes=started_since(before, tmp, o.node_ip),
        started_at=time.time(),
        ports=node_ports(o),
        interface=o.interface,
    )
    record.save(state_dir)
    return record
