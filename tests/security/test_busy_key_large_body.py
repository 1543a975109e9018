"""Attack: a key already at its in-flight limit keeps sending 8 MiB bodies; the gateway should
refuse it from the Authorization header alone, without reading (buffering) the body. The key's
slot, taken before the body, must come back on every later refusal."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.gateway.conftest import MODEL, Rig
from tests.security.admission_probe import incoming, key_in_flight

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, "messages": MSG, **fields}).encode()


async def test_busy_key_is_refused_before_its_body_is_read(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = rig.keys.create("busy", max_concurrent=1)
    started = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(rig.gateway.proxy, "forward", slow)
    first = asyncio.create_task(rig.gateway._route(incoming(body(), secret), CHAT))
    await started.wait()

    async def never_read() -> dict[str, Any]:
        raise AssertionError("the body of a request over its key's limit was read")

    answer = await rig.gateway._route(incoming(body(), secret, never_read), CHAT)
    assert answer.status_code == 429
    assert b"concurrency_limit" in answer.body
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


@pytest.mark.parametrize("rig", [{"max_body_bytes": 4096}], indirect=True)
@pytest.mark.parametrize(
    ("request_body", "status", "code"),
    [
        (b"x" * 5000, 413, b"request_too_large"),
        (b"{not json", 400, b"invalid_json"),
        (body(n=0), 400, b"invalid_value"),
        (json.dumps({"model": "nope", "messages": MSG}).encode(), 404, b"model_not_found"),
        (body(max_tokens=10**6, n=128), 429, b"rate_limit_tokens"),
    ],
)
async def test_refusals_after_the_key_slot_give_it_back(
    rig: Rig, request_body: bytes, status: int, code: bytes
) -> None:
    key, secret = rig.keys.create("refused", max_concurrent=1, tpm=1000)
    for _ in range(2):
        answer = await rig.gateway._route(incoming(request_body, secret), CHAT)
        assert (answer.status_code, code in answer.body) == (status, True)
    assert key_in_flight(rig.gateway, key.id) == 0


async def test_forbidden_model_and_rpm_refusals_give_the_slot_back(rig: Rig) -> None:
    key, secret = rig.keys.create("other", max_concurrent=1, models=("elsewhere",))
    answer = await rig.gateway._route(incoming(body(), secret), CHAT)
    assert answer.status_code == 403
    assert key_in_flight(rig.gateway, key.id) == 0
    key, secret = rig.keys.create("slow", max_concurrent=1, rpm=1)
    statuses = [(await rig.gateway._route(incoming(body(), secret), CHAT)).status_code]
    statuses.append((await rig.gateway._route(incoming(body(), secret), CHAT)).status_code)
    assert statuses == [200, 429]
    assert key_in_flight(rig.gateway, key.id) == 0
