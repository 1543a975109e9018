"""benchmarks/ha/overhead.py (issue 23's PostgreSQL-vs-SQLite overhead) runs end to end: one
short round at 1 stream through real gateways on each backend and a real PostgreSQL. It had
been broken for a round (a helper's signature changed under it) with no test to say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_postgres_overhead_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "ha-overhead.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/ha/overhead.py"), "--rounds", "1",
         "--concurrency", "1", "--warmup", "0.3", "--duration", "1.5", "--drain", "10",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(out.read_text())["summary"]
    assert row["concurrency"] == 1
    assert row["errors"] == {"direct": 0, "sqlite": 0, "postgres": 0}, row
    assert all(row["ttft_p50_ms"][t] > 0 for t in ("direct", "sqlite", "postgres")), row
    assert row["postgres_minus_sqlite_ms"] is not None
