"""The guard ends its engine (and the engine's children) when the watched process dies, and
otherwise exits the way the engine exited.

The tests wait for the process tree (or the engine's marker file) rather than sleeping a fixed
time: on a loaded 2-core box a Python start can take longer than a second or two."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

GUARD = [sys.executable, "-m", "deepfleet.fleet.ray.guard"]
ENGINE = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"  # noqa: E501


def start(watch: int, code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*GUARD, str(watch), "--", sys.executable, "-c", code],
                            start_new_session=True)  # fmt: skip


def tree_of(
    guard: subprocess.Popen[bytes], size: int = 3, limit_s: float = 30
) -> list[psutil.Process]:
    """The guard's descendants once there are `size` of them (the watcher, the engine and the
    engine's own child)."""
    deadline = time.monotonic() + limit_s
    while True:
        tree = psutil.Process(guard.pid).children(recursive=True)
        if len(tree) >= size or time.monotonic() > deadline:
            return tree
        time.sleep(0.1)


def test_engine_dies_with_the_watched_process() -> None:
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    guard = start(watched.pid, ENGINE)
    tree = tree_of(guard)
    assert len(tree) == 3  # the watcher, the engine and its own child
    watched.kill()
    watched.wait()
    assert guard.wait(10) == -signal.SIGKILL
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == []


def test_exit_code_and_signal_pass_through() -> None:
    me = psutil.Process().pid
    assert start(me, "raise SystemExit(3)").wait(10) == 3
    killed = start(me, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.wait(10) == -signal.SIGKILL


def test_sigterm_to_the_group_lets_the_engine_finish(tmp_path: Path) -> None:
    me = psutil.Process().pid
    ready = tmp_path / "handler-installed"
    code = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(30)"
    )
    guard = start(me, code)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists()
    os.killpg(guard.pid, signal.SIGTERM)
    assert guard.wait(10) == 0


def test_engine_dies_when_the_guard_itself_is_killed() -> None:
    """Ray SIGKILLs a dead worker's children: that is the guard, not the engine below it."""
    me = psutil.Process().pid
    guard = start(me, ENGINE)
    tree = tree_of(guard)
    assert len(tree) == 3  # the watcher, the engine and the engine's child
    guard.kill()
    guard.wait()
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == []
