"""Attack: spend far more than a key's tokens/min in one request. The bucket used to admit any
request while it held a fraction of a token, and `n` (up to 128) times a list of prompts made
one request's cost unbounded. Admission now reserves the request's worst case (prompt estimate
+ max_tokens x n x prompts) and caps the prompt batch of /v1/completions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.gateway.conftest import MODEL, Rig
from tests.security.admission_probe import incoming

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, **fields}).encode()


async def test_one_request_cannot_cost_more_than_the_budget(rig: Rig) -> None:
    _, secret = rig.keys.create("budget", tpm=1000)
    answer = await rig.gateway._route(
        incoming(body(messages=MSG, max_tokens=100, n=128), secret), CHAT
    )
    assert answer.status_code == 429
    assert b"rate_limit_tokens" in answer.body


async def test_reservation_must_fit_what_is_left(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    _, secret = rig.keys.create("budget", tpm=1000)
    started = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(rig.gateway.proxy, "forward", slow)
    first = asyncio.create_task(
        rig.gateway._route(incoming(body(messages=MSG, max_tokens=600), secret), CHAT)
    )
    await started.wait()  # in flight: its 600 + 15 tokens are reserved
    second = await asyncio.wait_for(  # admitted, it would hang in `slow`
        rig.gateway._route(incoming(body(messages=MSG, max_tokens=500), secret), CHAT), 5
    )
    assert second.status_code == 429
    assert b"rate_limit_tokens" in second.body
    assert "Retry-After" in second.headers
    first.cancel()  # it ends having used nothing more than its prompt: the rest is refunded
    with pytest.raises(asyncio.CancelledError):
        await first
    monkeypatch.undo()
    third = await rig.gateway._route(incoming(body(messages=MSG, max_tokens=900), secret), CHAT)
    assert third.status_code == 200


async def test_prompt_batch_is_capped(rig: Rig) -> None:
    prompts = ["hi"] * 65
    answer = await rig.gateway._route(incoming(body(prompt=prompts), None), COMPLETIONS)
    assert answer.status_code == 400
    assert json.loads(answer.body)["error"]["param"] == "prompt"
