"""Attack: a key limited to a small reasoning cap sends its own, larger `reasoning_cap` (or 0
under a cap set elsewhere) to think longer than its key allows. The effective cap is the
smallest of the request's, the key's and the gateway's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepfleet.gateway.errors import error_response
from deepfleet.gateway.relay import Outcome
from tests.gateway.conftest import MODEL, Rig
from tests.security.admission_probe import incoming

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize("rig", [{"reasoning_cap": 500}], indirect=True)
@pytest.mark.parametrize(
    ("asked", "key_cap", "effective"),
    [
        (10_000, 50, 50),  # the request cannot raise its key's cap
        (10_000, None, 500),  # nor the gateway's
        (20, 50, 20),  # it may lower it
        (None, 800, 500),  # the gateway's cap holds over a looser key
        (0, 50, 0),  # 0 is a cap (no thinking), not "unset"
        (None, None, 500),
    ],
)
async def test_request_cannot_raise_the_reasoning_cap(
    rig: Rig,
    monkeypatch: pytest.MonkeyPatch,
    asked: int | None,
    key_cap: int | None,
    effective: int,
) -> None:
    _, secret = rig.keys.create("capped", reasoning_cap=key_cap)
    sent: list[Any] = []

    async def record(req: Any, *args: Any) -> Any:
        sent.append(req)
        args[-1](Outcome("200", 1, 1))  # `done`, the proxy's last argument
        return error_response(200, "recorded", code="recorded")

    monkeypatch.setattr(rig.gateway.proxy, "forward", record)
    fields: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    if asked is not None:
        fields["reasoning_cap"] = asked
    await rig.gateway._route(incoming(json.dumps(fields).encode(), secret), CHAT)
    assert sent[0].reasoning_cap == effective
