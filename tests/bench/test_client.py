from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from deepfleet.bench.client import OpenAIClient, RequestSpec, build_payload
from tests.bench.conftest import FakeEngine

Serve = Callable[[FakeEngine], Awaitable[str]]


@pytest.mark.parametrize(
    "spec",
    [
        RequestSpec(messages=({"role": "user", "content": "hi"},), max_tokens=5),
        RequestSpec(prompt="hi", max_tokens=5),
    ],
)
async def test_stream_timing_follows_vllm_definitions(spec: RequestSpec, serve: Serve) -> None:
    engine = FakeEngine(tokens=4, gap_s=0.01)
    async with OpenAIClient(await serve(engine)) as client:
        result = await client.send("fake-model", spec)
    assert result.ok, result.error
    assert result.output_tokens == 4
    assert result.prompt_tokens == 7
    assert len(result.itl_s) == 3
    assert result.ttft_s > 0
    assert result.e2e_s == pytest.approx(result.ttft_s + sum(result.itl_s), abs=1e-6)
    assert result.tpot_s == pytest.approx((result.e2e_s - result.ttft_s) / 3)
    body = engine.bodies[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_http_error_is_a_failed_result(serve: Serve) -> None:
    async with OpenAIClient(await serve(FakeEngine(status=503))) as client:
        result = await client.send("m", RequestSpec(prompt="x"))
    assert not result.ok
    assert "503" in result.error


async def test_connection_refused_is_a_failed_result() -> None:
    async with OpenAIClient("http://127.0.0.1:9") as client:
        result = await client.send("m", RequestSpec(prompt="x"))
    assert not result.ok


def test_payload_carries_session_and_ignore_eos() -> None:
    body = build_payload("m", RequestSpec(prompt="p", max_tokens=3, session="u1"))
    assert body["user"] == "u1"
    assert body["ignore_eos"] is True
    assert body["max_tokens"] == 3
