"""A real Prometheus over a real fleet (vLLM's CPU build), configured by the rendered files:
every dashboard query returns data after some load, and killing the engine fires the
engine-down alert within its `for` window.

Queries that read metrics nobody exports yet (names.PENDING: the KV routing layer's, not yet
served by the gateway) or that exist only on NVIDIA nodes (names.DCGM) are skipped, by name,
and listed in the output.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from deepfleet.config import default_config
from deepfleet.fleet.ports import free_port
from deepfleet.observability.render import render_monitoring, settings_for
from tests.e2e.conftest import MODEL, Fleet, running_fleet, status_json
from tests.helpers.processes import ROOT, spawn, stop, wait_http
from tests.observability.promql import dashboard_queries, pending_reads, substitute
from tests.observability.sd_server import STATE_ENV

pytestmark = pytest.mark.slow

ENGINE_DOWN_FOR_S = 5
SHARED_PREFIX = "You are a terse assistant for a fleet of GPU servers. " * 40


@dataclass
class Stack:
    fleet: Fleet
    prometheus: str
    sd_source: str  # "gateway" or "stand-in"
    monitoring: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(
            httpx.get(f"{self.prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        )

    def targets(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prometheus}/api/v1/targets", timeout=10)
        return list(r.json()["data"]["activeTargets"])


def wait_for(what: str, check: Any, timeout: float, every: float = 0.5) -> float:
    """Seconds until check() is truthy."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s")


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus is not installed: scripts/setup-test-deps.sh installs it (Debian)")
    return path


@pytest.fixture(scope="module")
def stack(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prom")
    with running_fleet(tmp_path_factory.mktemp("fleet")) as fleet:
        stand_in = None
        if httpx.get(f"{fleet.url}/sd/targets", timeout=5).status_code == 200:
            sd_source, publisher = "gateway", fleet.url
        else:  # the gateway does not mount the observability routes yet
            port = free_port()
            publisher = f"http://127.0.0.1:{port}"
            env = {**os.environ, STATE_ENV: str(fleet.state_dir / "fleet.json")}
            argv = [sys.executable, "-m", "uvicorn", "tests.observability.sd_server:create_app",
                    "--factory", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"]  # fmt: skip
            with (tmp / "sd.log").open("wb") as log:
                stand_in = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=ROOT, start_new_session=True)  # fmt: skip
            wait_http(f"{publisher}/sd/targets")
            sd_source = "stand-in"
        settings = settings_for(
            default_config(), gateway_url=publisher, scrape_interval="1s",
            evaluation_interval="1s", engine_down_for=f"{ENGINE_DOWN_FOR_S}s", alert_for="1m",
        )  # fmt: skip
        render_monitoring(settings, tmp / "monitoring")
        port = free_port()
        prom = spawn([prometheus_bin, f"--config.file={tmp / 'monitoring/prometheus.yml'}",
                      f"--storage.tsdb.path={tmp / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                     tmp / "prometheus.log")  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=60)
            yield Stack(fleet, f"http://127.0.0.1:{port}", sd_source, tmp / "monitoring")
        finally:
            stop(prom)
            if stand_in is not None:
                stop(stand_in)


async def send_load(url: str, requests: int = 12, concurrency: int = 4) -> list[int]:
    """Streamed chats sharing a long prefix (prefix-cache hits), and one unknown model."""
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, i: int, model: str = MODEL) -> int:
        question = {"role": "user", "content": f"Question {i}: name a colour."}
        body = {"model": model, "stream": True, "max_tokens": 24, "temperature": 0,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "system", "content": SHARED_PREFIX}, question]}  # fmt: skip
        async with gate, session.post(f"{url}/v1/chat/completions", json=body) as r:
            await r.read()
            return r.status

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        statuses = await asyncio.gather(*(one(session, i) for i in range(requests)))
        statuses.append(await one(session, -1, model="no-such-model"))
    return list(statuses)


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    print(f"\nservice discovery served by: {stack.sd_source}")
    jobs = {"deepfleet-engines", "deepfleet-gateway", "deepfleet-fleet"}
    wait_for("every target up", lambda: {t["labels"]["job"] for t in stack.targets()
                                          if t["health"] == "up"} >= jobs, 60)  # fmt: skip
    engine = next(t for t in stack.targets() if t["labels"]["job"] == "deepfleet-engines")
    assert {k: engine["labels"][k] for k in ("role", "model", "node")} == {
        "role": "engine",
        "model": MODEL,
        "node": "local",
    }
    assert engine["labels"]["replica"].startswith(MODEL)

    statuses = asyncio.run(send_load(stack.fleet.url))
    assert statuses.count(200) == 12 and statuses[-1] == 404
    time.sleep(4)  # a few scrapes and rule evaluations after the last request

    queries = dashboard_queries(stack.monitoring / "grafana/dashboards")
    checked, pending, empty = [], {}, []
    for q in queries:
        skip = pending_reads(q.expr)
        if skip:
            pending[q.label] = sorted(skip)
            continue
        result = stack.query(substitute(q.expr))
        values = [float(r["value"][1]) for r in result]
        if not values or all(math.isnan(v) for v in values):
            empty.append(f"{q.label}: {q.expr} -> {result}")
        checked.append(q.label)
    print(f"{len(checked)} panel queries returned data; {len(pending)} pending:")
    for label, metrics in pending.items():
        print(f"  pending {label}: {', '.join(metrics)}")
    assert not empty, "\n".join(empty)
    assert len(checked) >= 40
    slo = stack.query(f'deepfleet:slo_ttft_seconds{{model="{MODEL}"}}')
    assert float(slo[0]["value"][1]) == 2.0


def test_killing_the_engine_fires_engine_down(stack: Stack) -> None:
    replicas = status_json(stack.fleet.state_dir)["replicas"]
    assert isinstance(replicas, list) and len(replicas) == 1
    replica: dict[str, Any] = replicas[0]
    t0 = time.monotonic()
    os.killpg(int(replica["pid"]), signal.SIGKILL)

    def firing(name: str) -> list[dict[str, Any]]:
        return [a for a in stack.alerts() if a["labels"]["alertname"] == name
                and a["state"] == "firing"]  # fmt: skip

    waited = wait_for("DeepfleetEngineDown firing", lambda: firing("DeepfleetEngineDown"), 60, 0.25)
    print(f"\nDeepfleetEngineDown fired {time.monotonic() - t0:.1f}s after SIGKILL "
          f"(for: {ENGINE_DOWN_FOR_S}s, scrape and evaluation every 1s)")  # fmt: skip
    assert ENGINE_DOWN_FOR_S <= waited <= ENGINE_DOWN_FOR_S + 10
    (alert,) = firing("DeepfleetEngineDown")
    assert alert["labels"]["replica"] == replica["id"] and alert["labels"]["model"] == MODEL
    wait_for("DeepfleetModelNoReadyReplica firing",
             lambda: firing("DeepfleetModelNoReadyReplica"), 30)  # fmt: skip

    # The supervisor restarts the engine; its target stayed listed, so the alert resolves.
    def ready_again() -> bool:
        now = status_json(stack.fleet.state_dir)["replicas"]
        return isinstance(now, list) and now[0]["state"] == "ready"

    wait_for("engine ready again", ready_again, 420, 1)
    wait_for("DeepfleetEngineDown resolved", lambda: not firing("DeepfleetEngineDown"), 30)
    restarts = stack.query(f'deepfleet_replica_restarts_total{{replica="{replica["id"]}"}}')
    assert float(restarts[0]["value"][1]) == 1


def test_gateway_mounts_the_observability_routes(stack: Stack) -> None:
    if stack.sd_source != "gateway":
        pytest.skip("the gateway does not serve /sd/targets yet (a stand-in served it above)")
    targets = httpx.get(f"{stack.fleet.url}/sd/targets", timeout=5).json()
    assert {t["labels"]["role"] for t in targets} == {"engine", "gateway"}
    fleet = httpx.get(f"{stack.fleet.url}/metrics/fleet", timeout=5)
    assert fleet.status_code == 200 and "deepfleet_replica_state" in fleet.text
    print(json.dumps(targets))
