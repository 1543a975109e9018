"""The bad-input corpus (benchmarks/security/bad_input_corpus.py) against a real fleet: the
bundled model on vLLM's CPU build behind the gateway, with short head and body deadlines so the
slow senders finish quickly. Issue 19's acceptance: no 500, no hang past the deadlines, and the
gateway's admission and in-flight gauges and the engine's running requests back to 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepfleet.fleet.state import read_state
from tests.e2e.conftest import MODEL, cli, running_fleet

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).parents[2] / "benchmarks" / "security" / "bad_input_corpus.py"
HEAD_S, BODY_S = 2.0, 3.0
CONFIG = f"""
models:
  - name: {MODEL}
    source: bundled
gateway:
  head_timeout_s: {HEAD_S}
  body_timeout_s: {BODY_S}
"""


def run_corpus(url: str, engine: str, key: str) -> dict[str, object]:
    argv = [sys.executable, str(CORPUS), "--gateway", url, "--engine", engine, "--key", key]
    argv += ["--model", MODEL, "--deadline", str(HEAD_S + BODY_S + 5), "--json"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert r.stdout, r.stderr
    return dict(json.loads(r.stdout))


def test_the_bad_input_corpus_gets_no_500_and_leaves_nothing_in_flight(tmp_path: Path) -> None:
    with running_fleet(tmp_path, CONFIG) as fleet:
        made = cli("keys", "create", "--name", "corpus", "--json", "--state-dir", str(tmp_path))
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)["secret"]
        state = read_state(tmp_path / "fleet.json")
        assert state is not None and state.replicas
        report = run_corpus(fleet.url, state.replicas[0].url, key)
    print(json.dumps(report, indent=1))
    assert int(str(report["cases"])) >= 300
    assert report["status_500"] == [], report["status_500"]
    assert report["hangs"] == [], report["hangs"]
    gauges = report["gateway_gauges"]
    assert isinstance(gauges, dict) and gauges and not any(gauges.values()), gauges
    assert report["engine_num_requests_running"] == 0
