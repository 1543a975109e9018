"""What one node looks like to the doctor: accelerator driver, engine install, disks, shared
memory, network interfaces, clock. Collected where it runs (this machine, or a Ray task
pinned to a node); nothing here judges."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SHM = "/dev/shm"


@dataclass(frozen=True)
class PathFacts:
    path: str
    exists: bool
    has_config: bool
    free_bytes: int | None
    """Free bytes on the filesystem holding the path (or its nearest existing parent)."""
    mount: str | None


@dataclass(frozen=True)
class NodeFacts:
    node: str
    hostname: str
    time: float
    nvidia_driver: str | None = None
    cuda_version: str | None = None
    gpus: tuple[str, ...] = ()
    npus: int = 0
    vllm_installed: bool = False
    shm_bytes: int | None = None
    interfaces: tuple[str, ...] = ()
    paths: tuple[PathFacts, ...] = field(default_factory=tuple)


def _nvidia() -> tuple[str | None, str | None, tuple[str, ...]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, None, ()
    try:
        head = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
        rows = subprocess.run(
            [exe, "--query-gpu=driver_version,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None, ()
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", head)
    lines = [r.split(",", 1) for r in rows.strip().splitlines() if "," in r]
    driver = lines[0][0].strip() if lines else None
    return driver, cuda.group(1) if cuda else None, tuple(n.strip() for _, n in lines)


def _npus() -> int:
    return len([d for d in os.listdir("/dev") if re.fullmatch(r"davinci\d+", d)])


def _existing_parent(path: Path) -> Path | None:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return None


def path_facts(path: str) -> PathFacts:
    p = Path(path).expanduser()
    parent = _existing_parent(p)
    free = shutil.disk_usage(parent).free if parent is not None else None
    mount = None
    if parent is not None:
        mount = str(parent)
        while not os.path.ismount(mount) and mount != "/":
            mount = os.path.dirname(mount)
    return PathFacts(str(p), p.exists(), (p / "config.json").is_file(), free, mount)


def shm_bytes() -> int | None:
    try:
        st = os.statvfs(SHM)
    except OSError:
        return None
    return st.f_frsize * st.f_blocks


def collect(node: str, paths: list[str]) -> NodeFacts:
    """Facts of the machine this runs on; `paths` are model folders or cache dirs to look at."""
    driver, cuda, gpus = _nvidia()
    return NodeFacts(
        node=node,
        hostname=socket.gethostname(),
        time=time.time(),
        nvidia_driver=driver,
        cuda_version=cuda,
        gpus=gpus,
        npus=_npus(),
        vllm_installed=importlib.util.find_spec("vllm") is not None,
        shm_bytes=shm_bytes(),
        interfaces=tuple(sorted(psutil.net_if_addrs())),
        paths=tuple(path_facts(p) for p in paths),
    )
