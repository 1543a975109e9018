"""Mid-stream migration against deterministic fake engines (migration_engine.py): the client
sees one stream, with the text, id and usage of an uninterrupted one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

from deepfleet.catalog import bundled
from deepfleet.config.kvcache import KvRoutingSpec
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state
from deepfleet.gateway.app import Gateway
from deepfleet.gateway.keys import KeyStore
from deepfleet.gateway.limits import TokenBuckets
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.relay import Outcome
from deepfleet.gateway.server import HTTP_PROTOCOL
from deepfleet.gateway.settings import GatewaySettings
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds
from tests.gateway.migration_engine import Control, MigrationEngine

MODEL = "tiny"
FOLDER = bundled.default_target()
pytestmark = pytest.mark.skipif(
    not (FOLDER / "tokenizer.json").is_file(), reason="bundled model not prepared"
)
MSG = [{"role": "user", "content": "count"}]


@dataclass
class MRig:
    url: str
    ctl: Control
    engines: list[MigrationEngine]
    gateway: Gateway
    outcomes: list[Outcome]


@pytest.fixture
async def mrig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[MRig]:
    """Three fake engines sharing one Control; params: GatewaySettings fields, and
    `tokenizer: False` for a fleet state without a tokenizer folder."""
    params = dict(getattr(request, "param", {}))
    tokenizer = params.pop("tokenizer", True)
    model_limit = params.pop("model_limit", None)
    ctl = Control()
    engines = [MigrationEngine(f"e{i}", FOLDER, ctl) for i in range(3)]
    for e in engines:
        await e.start()
    state_path = tmp_path / "fleet.json"
    metrics = GatewayMetrics()
    table = EndpointTable(state_path)
    settings = GatewaySettings(read_timeout_s=5, **params)
    gateway = Gateway(
        table,
        KeyStore(tmp_path / "keys.db"),
        TokenBuckets(tmp_path / "usage.db"),
        settings,
        metrics,
        RoutingFeeds(table, KvRoutingSpec().model_dump(), registry=metrics.registry),
    )
    outcomes: list[Outcome] = []
    finisher = gateway.admission.finisher

    def counting(*args: Any) -> Callable[[Outcome], None]:
        done = finisher(*args)

        def wrapped(outcome: Outcome) -> None:
            outcomes.append(outcome)
            done(outcome)

        return wrapped

    gateway.admission.finisher = counting  # type: ignore[method-assign]
    port = free_port()
    state = FleetState(
        controller_pid=1,
        gateway_url=f"http://127.0.0.1:{port}",
        models=[
            ModelRoute(
                MODEL,
                "round_robin",
                tokenizer=str(FOLDER) if tokenizer else None,
                migration_limit=model_limit,
            )
        ],
    )
    for i, e in enumerate(engines):
        state.replicas.append(
            ReplicaStatus(f"{MODEL}-{i}", MODEL, "fake", e.url, state=ReplicaState.READY)
        )
    write_state(state_path, state)
    table.refresh()
    config = uvicorn.Config(
        gateway.app(), host="127.0.0.1", port=port, log_level="warning", http=HTTP_PROTOCOL
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    yield MRig(f"http://127.0.0.1:{port}", ctl, engines, gateway, outcomes)
    server.should_exit = True
    await task
    for e in engines:
        await e.stop()


async def stream(rig: MRig, path: str, body: dict[str, Any]) -> list[dict[str, Any] | str]:
    """The client's events, parsed; "[DONE]" as a string."""
    out: list[dict[str, Any] | str] = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(rig.url + path, json={"model": MODEL, "stream": True, **body}) as resp,
    ):
        assert resp.status == 200
        async for line in resp.content:
            text = line.decode().strip()
            if text.startswith("data: "):
                data = text.removeprefix("data: ")
                out.append("[DONE]" if data == "[DONE]" else json.loads(data))
    return out


def parts(events: list[dict[str, Any] | str]) -> tuple[str, str, dict[str, Any] | None]:
    reasoning, content, usage = "", "", None
    for e in events:
        if isinstance(e, str):
            continue
        assert "error" not in e, e
        usage = e.get("usage") or usage
        for c in e["choices"]:
            delta = c.get("delta")
            if delta is None:
                content += c.get("text") or ""
            else:
                reasoning += delta.get("reasoning") or ""
                content += delta.get("content") or ""
    return reasoning, content, usage


async def metric(rig: MRig, name: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(rig.url + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def reference(rig: MRig, path: str, body: dict[str, Any]) -> list[dict[str, Any] | str]:
    fail, rig.ctl.fail = rig.ctl.fail, ""
    events = await stream(rig, path, body)
    rig.ctl.fail = fail
    return events


CASES = [
    ("/v1/chat/completions", {"messages": MSG}, 0),
    ("/v1/completions", {"prompt": "count"}, 0),
    ("/v1/chat/completions", {"messages": MSG}, 6),  # R1: dies inside the reasoning
]


@pytest.mark.parametrize(("path", "body", "thoughts"), CASES, ids=["chat", "completion", "r1"])
async def test_engine_dying_mid_stream_continues_as_one_stream(
    mrig: MRig, path: str, body: dict[str, Any], thoughts: int
) -> None:
    mrig.ctl.thoughts = thoughts
    body = {**body, "stream_options": {"include_usage": True}}
    ref = await reference(mrig, path, body)
    mrig.ctl.fail = "die"
    got = await stream(mrig, path, body)
    assert got[-1] == "[DONE]" and got.count("[DONE]") == 1
    assert parts(got)[:2] == parts(ref)[:2]  # the exact text, reasoning and answer in place
    assert parts(ref)[1].count(" w") == 12
    ids = {e["id"] for e in got if isinstance(e, dict)}
    objects = {e["object"] for e in got if isinstance(e, dict)}
    assert len(ids) == 1 and len(objects) == 1
    _, _, usage = parts(got)
    _, _, ref_usage = parts(ref)
    assert usage is not None and ref_usage is not None
    assert usage["completion_tokens"] == ref_usage["completion_tokens"]
    assert sum(1 for e in got if isinstance(e, dict) and e.get("usage")) == 1
    # Continued at the token level, from where the first engine stopped.
    cont = mrig.ctl.bodies[-1]
    assert isinstance(cont["prompt"], list) and all(isinstance(t, int) for t in cont["prompt"])
    assert await metric(mrig, 'deepfleet_migrations_total{model="tiny",reason="disconnect"}') == 1
    assert await metric(mrig, "deepfleet_migration_gap_seconds_count") == 1
    assert len(mrig.outcomes) == 2 and all(o.status == "200" for o in mrig.outcomes)
    assert all(n == 0 for n in mrig.gateway.table.in_flight.values())


@pytest.mark.parametrize("mrig", [{"tokenizer": False}], indirect=True)
async def test_without_a_tokenizer_the_text_continues_the_assistant_message(mrig: MRig) -> None:
    ref = await reference(mrig, "/v1/chat/completions", {"messages": MSG})
    mrig.ctl.fail = "die"
    got = await stream(mrig, "/v1/chat/completions", {"messages": MSG})
    assert parts(got)[1] == parts(ref)[1]
    cont = mrig.ctl.bodies[-1]
    assert cont["continue_final_message"] is True and cont["add_generation_prompt"] is False
    assert cont["messages"][-1] == {"role": "assistant", "content": " w0 w1 w2 w3"}
    roles = [e for e in got if isinstance(e, dict) and e["choices"][0]["delta"].get("role")]
    assert len(roles) == 1  # the continuation's role chunk is not repeated


@pytest.mark.parametrize("mrig", [{"migration_limit": 1}], indirect=True)
async def test_migration_limit_then_error_event(mrig: MRig) -> None:
    mrig.ctl.fail, mrig.ctl.fail_times = "die", 5
    got = await stream(mrig, "/v1/chat/completions", {"messages": MSG})
    assert got[-1] == "[DONE]"
    last = got[-2]
    assert isinstance(last, dict) and last["error"]["code"] == "upstream_error"
    assert mrig.ctl.requests == 2  # the first engine and one migration
    assert len(mrig.outcomes) == 1 and mrig.outcomes[0].status == "502"


@pytest.mark.parametrize("mrig", [{"model_limit": 0}], indirect=True)
async def test_a_models_migration_limit_overrides_the_gateways(mrig: MRig) -> None:
    mrig.ctl.fail = "die"
    got = await stream(mrig, "/v1/chat/completions", {"messages": MSG})
    last = got[-2]
    assert isinstance(last, dict) and last["error"]["code"] == "upstream_error"
    assert mrig.ctl.requests == 1


@pytest.mark.parametrize("mrig", [{"stall_timeout_s": 0.3}], indirect=True)
async def test_stalled_engine_migrates_after_the_deadline(mrig: MRig) -> None:
    ref = await reference(mrig, "/v1/completions", {"prompt": "count"})
    mrig.ctl.fail = "stall"
    got = await asyncio.wait_for(stream(mrig, "/v1/completions", {"prompt": "count"}), 10)
    assert parts(got)[1] == parts(ref)[1]
    assert await metric(mrig, 'deepfleet_migrations_total{model="tiny",reason="stall"}') == 1
    assert len(mrig.outcomes) == 2


async def test_non_stream_failure_is_retried_whole(mrig: MRig) -> None:
    mrig.ctl.fail = "die"
    async with (
        aiohttp.ClientSession() as s,
        s.post(mrig.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}) as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    assert body["choices"][0]["text"].count(" w") == 12
    assert mrig.ctl.requests == 2 and len(mrig.outcomes) == 1


async def test_non_stream_reasoning_is_capped(mrig: MRig) -> None:
    mrig.ctl.thoughts, mrig.ctl.words = 30, 4
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            mrig.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": MSG, "reasoning_cap": 10},
        ) as resp,
    ):
        body = await resp.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None
    assert 8 <= choice["message"]["reasoning"].count(" t") <= 11
    assert body["usage"]["completion_tokens"] == 10
    assert mrig.outcomes[0].output_tokens == 10
    assert await metric(mrig, "deepfleet_reasoning_capped_total") == 1


def set_ready(rig: MRig, ready: list[bool], restarts: list[int] | None = None) -> None:
    """Rewrite the fleet state: replica i ready or restarting, with its restart count."""
    table = rig.gateway.table
    state = table.follower.state
    assert state is not None
    for i, r in enumerate(state.replicas):
        r.state = ReplicaState.READY if ready[i] else ReplicaState.RESTARTING
        r.restarts = restarts[i] if restarts else r.restarts
    write_state(table.follower.path, state)
    table.refresh()


async def test_with_no_other_replica_ready_the_stream_waits_for_one(mrig: MRig) -> None:
    """The only ready engine dies mid-stream while the others restart: the stream is held
    (not ended with an error event) until one is back, then continues exactly."""
    ref = await reference(mrig, "/v1/completions", {"prompt": "count"})
    set_ready(mrig, [True, False, False])
    mrig.ctl.fail = "die"

    async def one_comes_back() -> None:
        await asyncio.sleep(0.2)
        set_ready(mrig, [False, False, False])  # the controller saw it die
        await asyncio.sleep(0.6)
        set_ready(mrig, [False, True, False])

    back = asyncio.ensure_future(one_comes_back())
    got = await asyncio.wait_for(stream(mrig, "/v1/completions", {"prompt": "count"}), 10)
    await back
    assert parts(got)[1] == parts(ref)[1]
    assert await metric(mrig, 'deepfleet_migrations_total{model="tiny",reason="disconnect"}') == 1
    assert await metric(mrig, "deepfleet_waiting_for_replica") == 0
    assert mrig.outcomes[-1].status == "200"


async def test_the_failed_replica_counts_again_once_restarted(mrig: MRig) -> None:
    """With one replica in the fleet, its restart (a new process) takes the continuation."""
    ref = await reference(mrig, "/v1/completions", {"prompt": "count"})
    set_ready(mrig, [True, False, False])
    mrig.ctl.fail = "die"

    async def it_restarts() -> None:
        await asyncio.sleep(0.2)
        set_ready(mrig, [False, False, False])
        await asyncio.sleep(0.4)
        set_ready(mrig, [True, False, False], restarts=[1, 0, 0])

    back = asyncio.ensure_future(it_restarts())
    got = await asyncio.wait_for(stream(mrig, "/v1/completions", {"prompt": "count"}), 10)
    await back
    assert parts(got)[1] == parts(ref)[1]
    assert mrig.outcomes[-1].status == "200"
