"""What `deepfleet node start` started, so `node stop` stops exactly that node.

`ray stop` kills every Ray process of the host, whoever started it. deepfleet records the
processes its `ray start` created (new since the start, and naming this node's temp dir or
node id) with their start times, and on stop signals those and every process below them:
Ray's agents and workers, and the engines the workers host.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

NODE_RECORD = "ray-node.json"


@dataclass
class NodeRecord:
    role: str  # "head" or "worker"
    address: str  # the cluster's GCS address, HOST:PORT
    node_ip: str
    temp_dir: str
    token_path: str | None = None
    processes: list[tuple[int, float]] = field(default_factory=list)
    """(pid, create time) of the processes `ray start` left running for this node."""
    started_at: float = 0.0
    ports: list[int] = field(default_factory=list)
    interface: str | None = None

    def save(self, state_dir: Path) -> Path:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / NODE_RECORD
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, state_dir: Path) -> NodeRecord | None:
        try:
            data = json.loads((state_dir / NODE_RECORD).read_text())
            data["processes"] = [tuple(p) for p in data.get("processes", [])]
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def snapshot() -> set[int]:
    return set(psutil.pids())


def started_since(before: set[int], temp_dir: str, node_ip: str) -> list[tuple[int, float]]:
    """Processes that appeared since `before` and belong to the node started with `temp_dir`
    and `node_ip`: they name the temp dir or this node's id, or descend from one that does."""
    new = []
    for pid in set(psutil.pids()) - before:
        try:
            new.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    lines = {p.pid: _cmdline(p) for p in new}
    node_ids = {
        m.group(1)
        for line in lines.values()
        if f"--node_ip_address={node_ip}" in line
        for m in [re.search(r"--node_id=([0-9a-f]+)", line)]
        if m
    }
    roots = {
        p.pid for p in new if temp_dir in lines[p.pid] or any(n in lines[p.pid] for n in node_ids)
    }
    mine: list[tuple[int, float]] = []
    for p in new:
        try:
            chain = {p.pid, *(a.pid for a in p.parents())}
            if chain & roots:
                mine.append((p.pid, p.create_time()))
        except psutil.NoSuchProcess:
            continue
    return sorted(mine)


def living(recorded: Iterable[tuple[int, float]]) -> list[psutil.Process]:
    """The recorded processes still running (same pid and start time) and all their
    descendants."""
    found: dict[int, psutil.Process] = {}
    for pid, created in recorded:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) > 0.01:
                continue
            for q in [p, *p.children(recursive=True)]:
                found[q.pid] = q
        except psutil.NoSuchProcess:
            continue
    return [p for p in found.values() if p.pid != os.getpid()]


def stop_processes(procs: list[psutil.Process], grace_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after `grace_s` whatever is left; returns how many were alive."""
    alive = []
    for p in procs:
        try:
            p.terminate()
            alive.append(p)
        except psutil.NoSuchProcess:
            continue
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=5)
    return len(alive)
