"""Judging a node's facts against what the config needs: one Finding per check, with the fix.

Pure functions over NodeFacts and Expectations (built from the config), so each rule is
tested with made-up facts; only `port_findings` looks at this machine's sockets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from deepfleet.catalog import bundled
from deepfleet.catalog.hardware import GiB, get_device
from deepfleet.catalog.models import ModelFactsError
from deepfleet.config.schema import FleetConfig
from deepfleet.engines.registry import get_adapter
from deepfleet.fleet.doctor.facts import NodeFacts, PathFacts
from deepfleet.fleet.doctor.holdings import node_share, weights_path
from deepfleet.fleet.ports import port_in_use
from deepfleet.planner import get_format, model_weight_bytes
from deepfleet.planner.fleet import model_facts_for, request_for

Level = Literal["ok", "warn", "error"]
MIN_SHM_BYTES = 1 * GiB
DOWNLOAD_MARGIN = 1.1


@dataclass(frozen=True)
class Finding:
    level: Level
    node: str
    check: str
    message: str
    fix: str | None = None

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.fix else ""
        return f"{self.level.upper():5} {self.node:<15} {self.check:<8} {self.message}{fix}"


@dataclass(frozen=True)
class ModelNeed:
    """Where a model must be on every node: a folder (`folder`, `bundled`) or room for a
    download into the hub cache (`download`, `bytes_needed` when the planner knows it)."""

    name: str
    field: str
    kind: Literal["folder", "bundled", "download"]
    path: str
    bytes_needed: int | None = None


@dataclass(frozen=True)
class Expectations:
    vendor: str
    devices_per_node: int
    interface: str | None
    models: tuple[ModelNeed, ...]
    engines: frozenset[str]

    @property
    def paths(self) -> list[str]:
        return [m.path for m in self.models]


def hub_cache() -> str:
    home = os.environ.get("HF_HOME")
    return str(Path(home) / "hub") if home else str(Path.home() / ".cache" / "huggingface" / "hub")


def _weights(cfg: FleetConfig, index: int) -> int | None:
    spec = cfg.models[index]
    try:
        facts = model_facts_for(spec)
    except (ModelFactsError, OSError):
        return None
    fmt = get_format(request_for(spec).weight_format, facts.shipped_format)
    return model_weight_bytes(facts, fmt)


def expectations(cfg: FleetConfig) -> Expectations:
    needs = []
    for i, m in enumerate(cfg.models):
        where = f"models[{i}].source"
        if m.is_bundled:
            needs.append(ModelNeed(m.name, where, "bundled", str(bundled.default_target())))
        elif m.is_local_path:
            needs.append(ModelNeed(m.name, where, "folder", m.source))
        elif m.weights_source is not None:  # pulled into the weights cache of every node
            held = node_share(cfg, i) or _weights(cfg, i)
            needs.append(ModelNeed(m.name, where, "download", weights_path(), held))
        else:
            needs.append(ModelNeed(m.name, where, "download", hub_cache(), _weights(cfg, i)))
    return Expectations(
        vendor=get_device(cfg.cluster.device).vendor,
        devices_per_node=cfg.cluster.devices_per_node,
        interface=cfg.cluster.network.interface,
        models=tuple(needs),
        engines=frozenset(m.engine for m in cfg.models),
    )


def _accelerator(f: NodeFacts, exp: Expectations) -> Finding:
    node = f.node
    if exp.vendor == "nvidia":
        if f.nvidia_driver is None:
            return Finding(
                "error",
                node,
                "driver",
                "no NVIDIA driver (nvidia-smi not found)",
                "install the NVIDIA driver and CUDA runtime, or set cluster.device: CPU",
            )
        if len(f.gpus) < exp.devices_per_node:
            return Finding(
                "error",
                node,
                "driver",
                f"{len(f.gpus)} GPU(s) visible, cluster.devices_per_node is {exp.devices_per_node}",
                "check CUDA_VISIBLE_DEVICES and the container's GPU flags, or lower "
                "cluster.devices_per_node",
            )
        name = f.gpus[0] if f.gpus else "?"
        return Finding(
            "ok",
            node,
            "driver",
            f"NVIDIA driver {f.nvidia_driver}, CUDA "
            f"{f.cuda_version or '?'}, {len(f.gpus)} x {name}",
        )
    if exp.vendor == "huawei":
        if f.npus < exp.devices_per_node:
            return Finding(
                "error",
                node,
                "driver",
                f"{f.npus} Ascend NPU(s) (/dev/davinciN), devices_per_node is "
                f"{exp.devices_per_node}",
                "install the Ascend driver and firmware (npu-smi info), and pass the "
                "/dev/davinci* devices to the container",
            )
        return Finding("ok", node, "driver", f"{f.npus} Ascend NPUs")
    return Finding("ok", node, "driver", "CPU only (vLLM's CPU build)")


def _engine(f: NodeFacts, exp: Expectations) -> Finding | None:
    if not any(get_adapter(e).python_module == "vllm" for e in exp.engines):
        return None
    if f.vllm_installed:
        return Finding("ok", f.node, "engine", "vLLM is installed")
    fix = "pip install 'deepfleet[cpu]'" if exp.vendor == "cpu" else "pip install vllm"
    return Finding("error", f.node, "engine", "vLLM is not installed in this Python", fix)


def _shm(f: NodeFacts, exp: Expectations) -> Finding:
    if f.shm_bytes is None:
        return Finding(
            "warn",
            f.node,
            "shm",
            "/dev/shm is missing",
            "mount a tmpfs at /dev/shm (docker: --shm-size=16g or --ipc=host)",
        )
    size = f"/dev/shm is {f.shm_bytes / GiB:.2f} GiB"
    if f.shm_bytes >= MIN_SHM_BYTES:
        return Finding("ok", f.node, "shm", size)
    level: Level = "warn" if exp.vendor == "cpu" else "error"
    return Finding(
        level,
        f.node,
        "shm",
        f"{size}: NCCL, vLLM and Ray's object store need more",
        "docker run --shm-size=16g (or --ipc=host); on Kubernetes an emptyDir "
        "with medium: Memory at /dev/shm",
    )


def _nic(f: NodeFacts, exp: Expectations) -> Finding | None:
    if not exp.interface:
        return None
    if exp.interface in f.interfaces:
        return Finding("ok", f.node, "nic", f"{exp.interface} exists")
    have = ", ".join(i for i in f.interfaces if i != "lo") or "only lo"
    return Finding(
        "error",
        f.node,
        "nic",
        f"NIC {exp.interface} (cluster.network.interface) does not exist here (it has: {have})",
        "set cluster.network.interface to this cluster's NIC name (the same on every "
        "node), or start this node with --interface",
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def _model(node: str, need: ModelNeed, p: PathFacts) -> Finding:
    if need.kind == "folder":
        if p.has_config:
            return Finding("ok", node, "model", f"{need.name}: {p.path} has config.json")
        what = "has no config.json" if p.exists else "does not exist"
        return Finding(
            "error",
            node,
            "model",
            f"{need.name}: model folder {p.path} ({need.field}) {what} on this node",
            "copy the model there (the same path on every node) or mount a shared "
            "filesystem; a hub id in `source` downloads it instead",
        )
    if need.kind == "bundled":
        if p.has_config:
            return Finding("ok", node, "model", f"{need.name}: bundled model prepared at {p.path}")
        return Finding(
            "warn",
            node,
            "model",
            f"{need.name}: bundled model not prepared at {p.path}",
            "deepfleet models prepare bundled (on every node; `up` does it on the head)",
        )
    if need.bytes_needed is None or p.free_bytes is None:
        return Finding("ok", node, "disk", f"{need.name}: downloads into {p.path} (size unknown)")
    want = int(need.bytes_needed * DOWNLOAD_MARGIN)
    where = f"{p.mount or p.path}"
    if p.free_bytes >= want:
        return Finding(
            "ok",
            node,
            "disk",
            f"{need.name}: {_gb(p.free_bytes)} free at {where}, weights {_gb(need.bytes_needed)}",
        )
    return Finding(
        "error",
        node,
        "disk",
        f"{need.name}: {_gb(p.free_bytes)} free at {where}, the weights need {_gb(want)}",
        "free space there, or point HF_HOME at a larger disk on every node",
    )


def judge_node(f: NodeFacts, exp: Expectations) -> list[Finding]:
    """Every per-node finding. `f.paths` lines up with `exp.models`."""
    out = [_accelerator(f, exp), _shm(f, exp)]
    out += [x for x in (_engine(f, exp), _nic(f, exp)) if x is not None]
    out += [_model(f.node, need, p) for need, p in zip(exp.models, f.paths, strict=True)]
    return out


def listener(port: int) -> str | None:
    """`pid 123 (python -m x)` listening on `port`, when the OS says."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                cmd = " ".join(psutil.Process(c.pid).cmdline())[:60]
            except psutil.NoSuchProcess:
                cmd = "?"
            return f"pid {c.pid} ({cmd})"
    return None


def port_findings(cfg: FleetConfig, node: str = "local") -> list[Finding]:
    """Ports the fleet binds on this machine that something else already holds."""
    wanted = [("gateway.port", cfg.gateway.host, cfg.gateway.port)]
    if cfg.ui.enabled:
        wanted.append(("ui.port", cfg.ui.host, cfg.ui.port))
    remote = cfg.kv_cache.remote
    if cfg.kv_cache.offload == "lmcache" and remote is not None and not remote.url:
        wanted.append(("kv_cache.remote.port", remote.host, remote.port))  # the fleet's store
    out = []
    for field, host, port in wanted:
        bind = "0.0.0.0" if host in ("", "::") else host
        if not port_in_use(bind, port):
            out.append(Finding("ok", node, "ports", f"port {port} ({field}) is free"))
            continue
        who = listener(port)
        by = f" by {who}" if who else ""
        out.append(
            Finding(
                "error",
                node,
                "ports",
                f"port {port} ({field}) is in use{by}",
                f"stop what holds it (`deepfleet down` if it is a fleet), or set "
                f"{field} to a free port (`deepfleet up --port` for the gateway)",
            )
        )
    return out
