"""The gateway against fake engines on real sockets, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import openai
import pytest

from deepfleet.fleet.state import ReplicaState
from tests.gateway.conftest import MODEL, Rig


def client(rig: Rig) -> openai.AsyncOpenAI:
    c = openai.AsyncOpenAI(base_url=rig.url + "/v1", api_key="unused", max_retries=0)
    rig.clients.append(c)
    return c


async def test_models_list(rig: Rig) -> None:
    models = await client(rig).models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_chat_non_stream_passes_engine_body_and_usage(rig: Rig) -> None:
    c = client(rig)
    r = await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content is not None
    assert r.choices[0].message.content.startswith("e")
    assert r.usage is not None and r.usage.completion_tokens == 5
    # The body reached the engine unchanged.
    sent = rig.engines[0].ctl.bodies + rig.engines[1].ctl.bodies
    assert sent == [{"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}]


async def test_chat_stream_with_usage(rig: Rig) -> None:
    stream = await client(rig).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text.count("-w") == 5
    assert usage is not None and usage.completion_tokens == 5


async def test_completions_stream_and_not(rig: Rig) -> None:
    c = client(rig)
    r = await c.completions.create(model=MODEL, prompt="x")
    assert r.choices[0].text.count("-w") == 5
    stream = await c.completions.create(model=MODEL, prompt="x", stream=True)
    parts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert len(parts) == 5


async def test_round_robin_alternates(rig: Rig) -> None:
    c = client(rig)
    for _ in range(4):
        await c.completions.create(model=MODEL, prompt="x")
    assert [e.ctl.requests for e in rig.engines] == [2, 2]


@pytest.mark.parametrize(
    ("body", "status", "code", "exc"),
    [
        (b"{not json", 400, "invalid_json", openai.BadRequestError),
        (b'{"model": 7, "messages": []}', 400, "invalid_value", openai.BadRequestError),
        (b'{"messages": []}', 400, "invalid_value", openai.BadRequestError),
        (b'{"model": "nope", "messages": []}', 404, "model_not_found", openai.NotFoundError),
    ],
    ids=["bad-json", "wrong-type", "missing-model", "unknown-model"],
)
async def test_errors_in_openai_envelope(
    rig: Rig, body: bytes, status: int, code: str, exc: type[openai.APIStatusError]
) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            rig.url + "/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == status
        err = (await resp.json())["error"]
    assert err["code"] == code
    assert set(err) == {"message", "type", "param", "code"}
    if status == 404 or b"model" in body:
        with pytest.raises(exc):
            await client(rig).chat.completions.create(
                model="nope" if status == 404 else MODEL,
                messages=[],
                extra_body={"model": 7} if code == "invalid_value" else None,
            )


async def test_no_ready_replica_is_503_with_retry_after(rig: Rig) -> None:
    """None ready and none coming (both failed): 503 at once (tests/gateway/
    test_wait_for_replica.py: a replica that is coming is waited for)."""
    rig.publish(ready=[False, False], down=ReplicaState.FAILED)
    async with (
        aiohttp.ClientSession() as s,
        s.post(rig.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}) as resp,
    ):
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "no_ready_replica"
    with pytest.raises(openai.InternalServerError):
        await client(rig).completions.create(model=MODEL, prompt="x")


async def test_refused_replica_is_skipped_before_first_byte(rig: Rig) -> None:
    await rig.engines[0].stop()
    c = client(rig)
    for _ in range(4):
        r = await c.completions.create(model=MODEL, prompt="x")
        assert r.choices[0].text.startswith("e1-")
    assert rig.engines[1].ctl.requests == 4


async def test_5xx_before_first_byte_is_retried(rig: Rig) -> None:
    rig.engines[0].ctl.mode = "error500"
    for _ in range(2):
        r = await client(rig).completions.create(model=MODEL, prompt="x")
        assert r.choices[0].text.startswith("e1-")


@pytest.mark.parametrize("rig", [{"migration_limit": 0}], indirect=True)
async def test_engine_dying_mid_stream_ends_with_error_event(rig: Rig) -> None:
    for e in rig.engines:
        e.ctl.mode = "die_midstream"
    started = time.monotonic()
    events: list[str] = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            rig.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True},
        ) as resp,
    ):
        assert resp.status == 200
        async for line in resp.content:
            if line.strip():
                events.append(line.decode().strip())
    assert time.monotonic() - started < 1.0
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))
    assert error["error"]["code"] == "upstream_error"
    assert len(events) == 4  # two content chunks, the error, [DONE]


async def test_client_disconnect_cancels_upstream(rig: Rig) -> None:
    for e in rig.engines:
        e.ctl.tokens, e.ctl.delay_s = 200, 0.02
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            rig.url + "/v1/completions", json={"model": MODEL, "prompt": "x", "stream": True}
        ) as resp,
    ):
        await resp.content.readline()
    for _ in range(100):
        if sum(e.ctl.cancelled for e in rig.engines) == 1:
            break
        await asyncio.sleep(0.02)
    assert sum(e.ctl.cancelled for e in rig.engines) == 1


async def test_metrics_and_health(rig: Rig) -> None:
    await client(rig).completions.create(model=MODEL, prompt="x")
    async with aiohttp.ClientSession() as s:
        async with s.get(rig.url + "/metrics") as resp:
            text = await resp.text()
        async with s.get(rig.url + "/health") as resp:
            assert resp.status == 200
        async with s.get(rig.url + "/ready") as resp:
            assert (await resp.json()) == {"ready": True, "models": {MODEL: 2}}
    assert f'deepfleet_requests_total{{key="anonymous",model="{MODEL}",status="200"}} 1.0' in text


async def test_stream_that_dies_before_first_byte_is_retried(rig: Rig) -> None:
    rig.engines[0].ctl.mode = "die_at_start"
    for _ in range(3):
        stream = await client(rig).completions.create(model=MODEL, prompt="x", stream=True)
        text = "".join([ch.choices[0].text async for ch in stream if ch.choices])
        assert text.startswith("e1-")
    assert rig.engines[1].ctl.requests == 3


async def test_silent_engines_time_out_into_a_503(rig: Rig) -> None:
    rig.publish(queue_timeout_s=0.5)  # no other replica may come in time: 503
    rig.gateway.proxy.upstream.read_timeout = 0.3
    for e in rig.engines:
        e.ctl.mode = "hang"
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        await client(rig).completions.create(model=MODEL, prompt="x", stream=True)
    assert info.value.status_code == 503
    assert "TimeoutError" in str(info.value)
    assert time.monotonic() - started < 2.0


async def test_when_every_replica_fails_before_a_byte_the_request_waits_for_a_restart(
    rig: Rig,
) -> None:
    """Both engines die at the request's start (killed a moment before the controller saw it):
    the request is not answered 503 but waits for a restarted replica and is served there."""
    for e in rig.engines:
        e.ctl.mode = "die_at_start"

    async def restart_one() -> None:
        await asyncio.sleep(0.3)
        rig.publish(ready=[False, False])  # the controller saw both die
        await asyncio.sleep(0.5)
        rig.engines[1].ctl.mode = "ok"
        rig.publish(ready=[False, True])  # one came back

    restarting = asyncio.ensure_future(restart_one())
    started = time.monotonic()
    stream = await client(rig).completions.create(model=MODEL, prompt="x", stream=True)
    text = "".join([ch.choices[0].text async for ch in stream if ch.choices])
    await restarting
    assert text.startswith("e1-")
    assert time.monotonic() - started >= 0.8
    wait = rig.gateway.metrics.registry.get_sample_value("deepfleet_replica_wait_seconds_count")
    assert wait == 1
