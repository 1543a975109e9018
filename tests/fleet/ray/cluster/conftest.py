"""A Ray cluster of real nodes on this machine, for tests that run inside a network namespace
whose only interface is loopback (tests/fleet/ray/test_netns.py starts them there): Ray listens on
every interface, so it never runs outside one. Nodes are started and stopped with
`deepfleet node start/stop`, each with its own state dir, temp dir and ports; the teardown
kills whatever those nodes left behind, and nothing else."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from deepfleet.fleet.ray.records import NodeRecord, living, stop_processes

ROOT = Path(__file__).parents[4]
DEEPFLEET = [sys.executable, "-m", "deepfleet"]
IN_NETNS = set(psutil.net_if_addrs()) == {"lo"}
NOT_IN_NETNS = "runs inside a loopback-only network namespace (tests/fleet/ray/test_netns.py)"


def cli(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(
        [*DEEPFLEET, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )
    assert r.returncode == 0, f"deepfleet {' '.join(args)}: {r.stdout}\n{r.stderr}"
    return r.stdout


@dataclass
class Cluster:
    root: Path
    token: Path
    nodes: dict[str, Path] = field(default_factory=dict)
    """Node name -> its state dir (the head's is also the fleet's)."""

    @property
    def head_dir(self) -> Path:
        return self.nodes["head"]

    def start(self, name: str, ip: str, cores: str, port_base: int | None = None) -> str:
        sdir = self.root / name
        temp = str(self.root / f"t{name}")
        args = ["node", "start", "--state-dir", str(sdir), "--temp-dir", temp,
                "--num-cpus", "1", "--cores", cores, "--token-file", str(self.token),
                "--object-store-gib", "0.5", "--node-ip", ip]  # fmt: skip
        if name == "head":
            args += ["--head", "--no-dashboard"]
        else:
            args += ["--join", "127.0.0.1:6379"]
        if port_base is not None:
            args += ["--port-base", str(port_base)]
        out = cli(*args)
        self.nodes[name] = sdir
        return out

    def record(self, name: str) -> NodeRecord:
        rec = NodeRecord.load(self.nodes[name])
        assert rec is not None
        return rec

    def processes(self, name: str) -> list[psutil.Process]:
        return living(self.record(name).processes)

    def ray_env(self) -> dict[str, str]:
        """Environment for a process that connects to this cluster."""
        import os

        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}

    def stop_all(self) -> None:
        for name in reversed(list(self.nodes)):
            rec = NodeRecord.load(self.nodes[name])
            if rec is not None:
                stop_processes(living(rec.processes), grace_s=5)
        stop_processes([p for p in psutil.process_iter() if self._ours(p)], grace_s=2)

    def _ours(self, p: psutil.Process) -> bool:
        """Started under this cluster: every Ray process here inherits the token path."""
        try:
            return p.environ().get("RAY_AUTH_TOKEN_PATH") == str(self.token)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False


OWNER = "owner"


def reap_stale_clusters() -> None:
    """Stop clusters of earlier runs whose test process died before its teardown (killed by a
    timeout, say): their processes carry the run's token path in their environment."""
    for owner in Path(tempfile.gettempdir()).glob(f"dfr*/{OWNER}"):
        pid, created = owner.read_text().split()
        try:
            if abs(psutil.Process(int(pid)).create_time() - float(created)) < 0.01:
                continue  # that run is still going
        except psutil.NoSuchProcess:
            pass
        Cluster(owner.parent, owner.parent / "token").stop_all()
        shutil.rmtree(owner.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if not IN_NETNS:
        pytest.skip(NOT_IN_NETNS)
    reap_stale_clusters()
    # Short: Ray's socket paths live under the temp dir and must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="dfr", dir="/tmp"))
    me = psutil.Process()
    (root / OWNER).write_text(f"{me.pid} {me.create_time()}")
    c = Cluster(root, root / "token")
    try:
        c.start("head", "127.0.0.1", "0")
        c.start("w1", "127.0.0.2", "1", port_base=7000)
        yield c
    finally:
        c.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def status(state_dir: Path) -> dict[str, object]:
    return dict(json.loads(cli("status", "--json", "--state-dir", str(state_dir))))
