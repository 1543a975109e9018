"""The gateway's two-phase path (gateway/pd.py) against fake engines that speak vLLM's
kv_transfer_params protocol on real sockets (tests/gateway/pd_engines.py), driven by the
openai SDK: the client sees one ordinary answer, identical to an aggregated engine's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from deepfleet.config.kvcache import KvRoutingSpec
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state
from deepfleet.gateway.app import Gateway
from deepfleet.gateway.keys import KeyStore
from deepfleet.gateway.limits import TokenBuckets
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.pd import decode_order, prefill_order
from deepfleet.gateway.server import HTTP_PROTOCOL
from deepfleet.gateway.settings import GatewaySettings
from deepfleet.routing.base import Endpoint
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds
from tests.gateway.pd_engines import PdEngine

MODEL = "r1"
PROMPT = "What is the capital of France?"


@dataclass
class PdRig:
    url: str
    prefill: list[PdEngine]
    decode: list[PdEngine]
    aggregated: PdEngine
    gateway: Gateway
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    def client(self) -> openai.AsyncOpenAI:
        c = openai.AsyncOpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)
        self.clients.append(c)
        return c

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient() as h:
            text = (await h.get(self.url + "/metrics")).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and f'model="{MODEL}"' in line
        )


def publish(path: Path, url: str, prefill: list[PdEngine], decode: list[PdEngine]) -> None:
    state = FleetState(controller_pid=1, gateway_url=url, models=[ModelRoute(MODEL, "round_robin")])
    for role, engines in (("prefill", prefill), ("decode", decode)):
        for i, e in enumerate(engines):
            state.replicas.append(
                ReplicaStatus(
                    f"{MODEL}-{role}-{i}", MODEL, "fake", e.url, ReplicaState.READY, role=role
                )
            )
    write_state(path, state)


@pytest.fixture
async def pd(tmp_path: Path) -> AsyncIterator[PdRig]:
    prefill = [PdEngine("p0"), PdEngine("p1")]
    decode = [PdEngine("d0")]
    aggregated = PdEngine("agg")
    for e in (*prefill, *decode, aggregated):
        await e.start()
    port = free_port()
    state_path = tmp_path / "fleet.json"
    publish(state_path, f"http://127.0.0.1:{port}", prefill, decode)
    metrics, table = GatewayMetrics(), EndpointTable(state_path)
    gateway = Gateway(
        table,
        KeyStore(tmp_path / "keys.db"),
        TokenBuckets(tmp_path / "usage.db"),
        GatewaySettings(read_timeout_s=5),
        metrics,
        RoutingFeeds(table, KvRoutingSpec().model_dump(), registry=metrics.registry),
    )
    table.refresh()
    config = uvicorn.Config(
        gateway.app(), host="127.0.0.1", port=port, log_level="warning", http=HTTP_PROTOCOL
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    rig = PdRig(f"http://127.0.0.1:{port}", prefill, decode, aggregated, gateway)
    yield rig
    for c in rig.clients:
        await c.close()
    server.should_exit = True
    await task
    for e in (*prefill, *decode, aggregated):
        await e.stop()


async def aggregated_text(rig: PdRig, max_tokens: int) -> str:
    async with httpx.AsyncClient() as h:
        r = await h.post(
            rig.aggregated.url + "/v1/completions",
            json={"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens},
        )
    return str(r.json()["choices"][0]["text"])


async def test_stream_is_prefilled_then_decoded_with_the_handle(pd: PdRig) -> None:
    stream = await pd.client().completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, stream=True, temperature=0
    )
    text = "".join([c.choices[0].text async for c in stream])
    assert text == await aggregated_text(pd, 12)
    (sent,) = [b for e in pd.prefill for b in e.bodies]
    assert sent["max_tokens"] == 1 and "stream" not in sent
    assert sent["kv_transfer_params"]["do_remote_decode"] is True
    (decoded,) = pd.decode[0].bodies
    assert decoded["stream"] is True and decoded["max_tokens"] == 12
    assert decoded["kv_transfer_params"]["do_remote_prefill"] is True
    assert pd.decode[0].pulled == 1 and pd.decode[0].computed == 0
    assert await pd.metric("deepfleet_pd_prefill_seconds_count") == 1
    assert await pd.metric("deepfleet_pd_handoff_seconds_count") == 1
    assert await pd.metric("deepfleet_time_to_first_token_seconds_count") == 1


async def test_chat_not_streamed_is_one_ordinary_answer(pd: PdRig) -> None:
    r = await pd.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_completion_tokens=6,
        max_tokens=6,
    )
    assert r.choices[0].message.content == await aggregated_text(pd, 6)
    (sent,) = [b for e in pd.prefill for b in e.bodies]
    assert sent["max_completion_tokens"] == 1 and sent["max_tokens"] == 1
    assert pd.decode[0].pulled == 1


async def test_failed_prefill_engine_is_skipped(pd: PdRig) -> None:
    pd.prefill[0].fail = True
    pd.prefill[1].fail = False
    for _ in range(2):
        r = await pd.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=4)
        assert r.choices[0].text == await aggregated_text(pd, 4)
    assert pd.decode[0].pulled == 2
    assert pd.prefill[1].computed == 2


async def test_no_prefill_answers_then_decode_computes_the_prompt(pd: PdRig) -> None:
    for e in pd.prefill:
        e.fail = True
    r = await pd.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=5)
    assert r.choices[0].text == await aggregated_text(pd, 5)
    assert pd.decode[0].computed == 1 and pd.decode[0].pulled == 0
    assert "kv_transfer_params" not in pd.decode[0].bodies[0]
    assert await pd.metric("deepfleet_pd_fallbacks_total") == 1


async def test_without_decode_replicas_prefill_engines_serve_whole(
    pd: PdRig, tmp_path: Path
) -> None:
    publish(tmp_path / "fleet.json", pd.url, pd.prefill, [])
    pd.gateway.table.refresh()
    r = await pd.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=3)
    assert r.choices[0].text == await aggregated_text(pd, 3)
    (sent,) = [b for e in pd.prefill for b in e.bodies]
    assert "kv_transfer_params" not in sent and sent["max_tokens"] == 3
    assert not pd.decode[0].bodies


async def test_prefill_refusing_the_request_leaves_the_answer_to_decode(pd: PdRig) -> None:
    r = await pd.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, n=1)
    assert r.choices[0].text == await aggregated_text(pd, 3)
    before = await pd.metric("deepfleet_pd_fallbacks_total")
    for e in pd.prefill:
        e.status = 400
    r = await pd.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=3)
    assert r.choices[0].text == await aggregated_text(pd, 3)
    assert await pd.metric("deepfleet_pd_fallbacks_total") == before + 1
    assert len([b for e in pd.prefill for b in e.bodies]) == 2  # not retried on the other


async def test_concurrent_prefills_spread_over_the_prefill_engines(pd: PdRig) -> None:
    for e in pd.prefill:
        e.delay_s = 0.3
    c = pd.client()
    answers = await asyncio.gather(
        *(c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2) for _ in range(2))
    )
    expected = await aggregated_text(pd, 2)
    assert [a.choices[0].text for a in answers] == [expected, expected]
    assert [e.computed for e in pd.prefill] == [1, 1]
    assert pd.decode[0].pulled == 2


def ep(rid: str, *, matched: int = 0, running: int = 0, kv: float = 0.0) -> Endpoint:
    return Endpoint(rid, MODEL, "http://x", running=running, matched_blocks=matched, kv_usage=kv)


@pytest.mark.parametrize(
    ("endpoints", "first"),
    [
        ([ep("a", running=0), ep("b", matched=4, running=3)], "b"),  # prefix hits first
        ([ep("a", matched=2, running=5), ep("b", matched=2, running=1)], "b"),  # then load
        ([ep("a"), ep("b")], "a"),
    ],
)
def test_prefill_order(endpoints: list[Endpoint], first: str) -> None:
    assert prefill_order(endpoints)[0].replica_id == first


@pytest.mark.parametrize(
    ("endpoints", "first"),
    [
        ([ep("a", matched=9, running=2), ep("b", running=1)], "b"),  # load, not prefix
        ([ep("a", running=1, kv=0.9), ep("b", running=1, kv=0.2)], "b"),  # then free KV
    ],
)
def test_decode_order(endpoints: list[Endpoint], first: str) -> None:
    assert decode_order(endpoints)[0].replica_id == first


async def test_pools_beside_aggregated_replicas_still_run_both_phases(
    pd: PdRig, tmp_path: Path
) -> None:
    """Mid-`apply` from aggregated to pools: an aggregated replica (no role) listed first must
    not turn the two phases off; it serves as a decode engine (it computes the prompt)."""
    state = FleetState(1, pd.url, [ModelRoute(MODEL, "round_robin")])
    state.replicas = [
        ReplicaStatus(f"{MODEL}-0", MODEL, "fake", pd.aggregated.url, ReplicaState.READY),
        ReplicaStatus(
            f"{MODEL}-prefill-0", MODEL, "fake", pd.prefill[0].url, ReplicaState.READY,
            role="prefill",
        ),
        ReplicaStatus(
            f"{MODEL}-decode-0", MODEL, "fake", pd.decode[0].url, ReplicaState.READY,
            role="decode",
        ),
    ]  # fmt: skip
    write_state(tmp_path / "fleet.json", state)
    pd.gateway.table.refresh()
    for _ in range(3):
        r = await pd.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=4)
        assert r.choices[0].text == await aggregated_text(pd, 4)
    sent = pd.prefill[0].bodies
    assert len(sent) == 3 and all(b["max_tokens"] == 1 for b in sent), sent
