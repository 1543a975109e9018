"""The whole GPU run (scripts/gpu/run_scenario.py) against FAKE vLLM engines: deepfleet's
simulator behind vLLM's startup lines. Proves start, warm-up, rounds, JSON and cleanup before
device time is spent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from benchmarks.gpu import model_dirs

from deepfleet.catalog import bundled

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_fake_run_writes_every_scenario_and_leaves_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    model_dirs.write_models(models, bundled.prepare().path)
    out = tmp_path / "out"
    cmd = [
        sys.executable, str(ROOT / "scripts/gpu/run_scenario.py"), "--fake", "--out", str(out),
        "--models", str(models), "--budget", "180", "--overhead-s", "80",
        "--concurrency", "1,4", "--rounds", "2",
        "--max-tokens", "16", "--routing-kv-gib", "1", "--groups", "2", "--users", "2",
        "--turns", "2", "--system-len", "200", "--history-len", "200",
        "--routing-max-tokens", "8", "--policy-limit", "30",
        "overhead", "routing", "planner",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    time.sleep(1.0)
    left = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(str(models) in arg for arg in (p.info["cmdline"] or []))
    ]
    assert left == [], f"processes left behind: {left}"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "logs.txt", "overhead.json", "planner-dsv3-8l.json", "planner-qwen2-7b.json",
        "routing.json",
    ], done.stdout[-3000:]  # fmt: skip
    overhead = json.loads((out / "overhead.json").read_text())
    assert overhead["complete"] is True
    assert [r["concurrency"] for r in overhead["summary"]] == [1, 4]
    assert all(r["direct_errors"] == 0 and r["gateway-w1_errors"] == 0 for r in overhead["summary"])
    assert all(r["throughput_ratio"] > 0.5 for r in overhead["summary"])
    for name in ("planner-qwen2-7b", "planner-dsv3-8l"):
        check = json.loads((out / f"{name}.json").read_text())["check"]
        assert check["all_within_target"] is True, check
    routing = json.loads((out / "routing.json").read_text())
    assert routing["complete"] is True
    for policy in ("kv_aware", "round_robin"):
        assert routing["summary"][policy]["hit_rate"] is not None
    assert (
        routing["summary"]["kv_aware"]["hit_rate"] >= routing["summary"]["round_robin"]["hit_rate"]
    )
    assert "===== engine-qwen2-7b.log" in (out / "logs.txt").read_text()
