"""Processes a scenario starts (engines, gateways), its time budget and its progress lines.

Every process is started in its own session with its output in a log file; `stop_all` ends
each group we started (SIGTERM, then SIGKILL), and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

T0 = time.monotonic()


def log(message: str) -> None:
    """A progress line with the seconds since this process started."""
    print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - T0:6.1f}s] {message}", flush=True)


@dataclass
class Budget:
    """A hard time budget: `left()` seconds remain until `total_s` after `start`."""

    total_s: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.start)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class Procs:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        path = self.logs / f"{name}.log"
        with path.open("ab") as sink:
            popen = subprocess.Popen(
                list(argv), stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **(env or {})}, cwd=cwd,
            )  # fmt: skip
        proc = Proc(name, popen, path)
        self.procs.append(proc)
        log(f"started {name} (pid {popen.pid}): {' '.join(argv)[:400]}")
        return proc

    def stop(self, proc: Proc, grace_s: float = 20.0) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(grace_s)
        # Children left in the session (vLLM's engine core, uvicorn's workers): the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(5)
        # The engine core holds the GPU memory: wait until the whole group is gone, so the
        # next engine's free-memory check at its start sees it released.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _group_alive(proc.popen.pid):
            time.sleep(0.2)
        if proc in self.procs:
            self.procs.remove(proc)
        log(f"stopped {proc.name}")

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process of the group remains."""
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


class Results:
    """The scenario's JSON, rewritten after every step so a killed run still leaves data."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"meta": meta, "complete": False}
        self.save()

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def append(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def on_signals(procs: Procs) -> None:
    """SIGTERM/SIGINT: stop what we started, then leave (a timeout still cleans up)."""

    def handler(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_IGN)
        log(f"signal {signum}: stopping children")
        procs.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
