"""`deepfleet node stop` stops the recorded processes and everything below them, nothing else."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from deepfleet.fleet.ray.records import NodeRecord, living, started_since, stop_processes

TREE = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"  # noqa: E501


def test_record_round_trip(tmp_path: Path) -> None:
    rec = NodeRecord("head", "10.0.0.1:6379", "10.0.0.1", "/tmp/ray", processes=[(1, 2.5)])
    rec.save(tmp_path)
    assert NodeRecord.load(tmp_path) == rec
    assert NodeRecord.load(tmp_path / "none") is None


def test_started_since_keeps_this_nodes_processes_and_stop_takes_their_children(
    tmp_path: Path,
) -> None:
    before = set(psutil.pids())
    mine = subprocess.Popen([sys.executable, "-c", TREE, f"--temp-dir={tmp_path}"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(1.0)
    try:
        recorded = started_since(before, str(tmp_path), "10.9.9.9")
        pids = {pid for pid, _ in recorded}
        assert mine.pid in pids and other.pid not in pids
        procs = living(recorded)
        assert len(procs) == 2  # the recorded process and the child it started
        assert stop_processes(procs, grace_s=2) == 2
        assert mine.wait(5) is not None and other.poll() is None
        assert living(recorded) == []
    finally:
        other.kill()
        other.wait()
        mine.kill()
        mine.wait()
