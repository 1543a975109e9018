"""R1-style reasoning through the gateway: passed through, counted, and capped on request."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from tests.gateway.conftest import MODEL, Rig

MSG = [{"role": "user", "content": "think first"}]


@pytest.fixture
def reasoning_rig(rig: Rig) -> Rig:
    for e in rig.engines:
        e.ctl.reasoning_tokens, e.ctl.tokens = 30, 4
    return rig


async def metric(rig: Rig, name: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(rig.url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_stream_passes_reasoning_and_counts_it(reasoning_rig: Rig) -> None:
    rig = reasoning_rig
    c = openai.AsyncOpenAI(base_url=rig.url + "/v1", api_key="x", max_retries=0)
    rig.clients.append(c)
    stream = await c.chat.completions.create(model=MODEL, messages=MSG, stream=True)
    thinking, answer = "", ""
    async for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            thinking += getattr(delta, "reasoning", None) or ""
            answer += delta.content or ""
    assert thinking.count("think") == 30 and answer.count("-w") == 4
    assert await metric(rig, "deepfleet_reasoning_tokens_sum") == 30
    assert await metric(rig, "deepfleet_answer_tokens_sum") == 4


async def test_non_stream_keeps_reasoning_field(reasoning_rig: Rig) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            reasoning_rig.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSG}
        ) as resp,
    ):
        body = await resp.json()
    assert body["choices"][0]["message"]["reasoning"].count("think") == 30
    assert await metric(reasoning_rig, "deepfleet_reasoning_tokens_count") == 1


async def test_reasoning_cap_ends_stream_cleanly(reasoning_rig: Rig) -> None:
    events = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            reasoning_rig.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": MSG, "stream": True, "reasoning_cap": 10},
        ) as resp,
    ):
        async for line in resp.content:
            if line.strip():
                events.append(line.decode().strip())
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2].removeprefix("data: "))
    assert last["choices"][0]["finish_reason"] == "length"
    thoughts = sum('"reasoning":"' in e for e in events)
    assert thoughts == 10
    assert not any("-w" in e for e in events)  # no answer after the cap
    assert await metric(reasoning_rig, "deepfleet_reasoning_capped_total") == 1
