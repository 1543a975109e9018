"""Attack (or accident): `deepfleet down` reads a stale fleet.json whose pids the kernel has
since given to other programs, and SIGKILLs their process groups. Now each pid is recorded
with its start time and `down` signals only processes that are still the recorded ones."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepfleet.fleet.lifecycle import down
from deepfleet.fleet.state import STATE_FILE, FleetState, ReplicaState, ReplicaStatus, write_state


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """Another user's program that now holds a pid fleet.json names (its own group)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    time.sleep(0.2)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _replica(pid: int, **start: int) -> ReplicaStatus:
    return ReplicaStatus("m-0", "m", "vllm", "http://x", ReplicaState.READY, pid=pid, **start)


@pytest.mark.parametrize("recorded", [{}, {"pid_start": 1}], ids=["no-start-time", "other-start"])
def test_down_spares_a_process_that_reused_a_recorded_pid(
    tmp_path: Path, stranger: subprocess.Popen[bytes], recorded: dict[str, int]
) -> None:
    state = FleetState(
        stranger.pid, "http://gw", replicas=[_replica(stranger.pid, **recorded)],
        gateway=_replica(stranger.pid, **recorded), **({"controller_start": 1} if recorded else {}),
    )  # fmt: skip
    write_state(tmp_path / STATE_FILE, state)
    assert down(tmp_path, 0.3, poll_s=0.05) is False
    time.sleep(0.2)
    assert stranger.poll() is None, "down signalled a process that is not the fleet's"
