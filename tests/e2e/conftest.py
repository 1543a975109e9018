"""End-to-end fixtures: a real `deepfleet up` with vLLM's CPU build on the bundled model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from deepfleet.fleet import readiness
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.process import signal_group

DEEPFLEET = [sys.executable, "-m", "deepfleet"]
MODEL = "SmolLM2-135M-Instruct"
START_TIMEOUT_S = 420


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEEPFLEET, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def status_json(state_dir: Path) -> dict[str, object]:
    r = cli("status", "--json", "--state-dir", str(state_dir))
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def wait_ready(
    state_dir: Path,
    proc: subprocess.Popen[bytes] | None,
    log: Path,
    timeout: float = START_TIMEOUT_S,
) -> dict[str, object]:
    """Until the fleet serves as `deepfleet up` means it (every process ready in fleet.json
    and the gateway's /ready answering 200); its `status --json`."""
    try:
        readiness.wait_ready(state_dir, timeout, process=proc)
    except readiness.FleetStartFailed as exc:
        raise AssertionError(f"deepfleet up exited {exc.returncode}:\n{log.read_text()}") from None
    except readiness.FleetNotReady as exc:
        raise AssertionError(f"{exc}:\n{log.read_text()[-3000:]}") from None
    return status_json(state_dir)


@dataclass
class Fleet:
    url: str
    state_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    seen: set[int] = field(default_factory=set)

    def snapshot_tree(self) -> None:
        """Remember every process under `deepfleet up`, to check later that none survives."""
        try:
            root = psutil.Process(self.proc.pid)
            self.seen |= {p.pid for p in root.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def survivors(self) -> list[str]:
        alive = []
        for pid in self.seen | {self.proc.pid}:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(p.cmdline())[:100]}")
            except psutil.NoSuchProcess:
                continue
        return alive


@contextmanager
def running_fleet(state_dir: Path, config: str | None = None) -> Iterator[Fleet]:
    """`deepfleet up` in the foreground (config: fleet.yaml text, or the embedded default);
    stopped with SIGINT, and every process it started is killed at the end."""
    port = free_port()
    log = state_dir / "up.log"
    args = ["up", "--state-dir", str(state_dir), "--port", str(port)]
    if config is not None:
        (state_dir / "fleet.yaml").write_text(config)
        args += ["-f", str(state_dir / "fleet.yaml")]
    with log.open("wb") as fh:
        proc = subprocess.Popen([*DEEPFLEET, *args], stdout=fh, stderr=subprocess.STDOUT)
    f = Fleet(f"http://127.0.0.1:{port}", state_dir, proc, log)
    try:
        wait_ready(state_dir, proc, log)
        f.snapshot_tree()
        yield f
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pid in f.seen:
            signal_group(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("fleet")) as f:
        yield f
