"""Attack: make requests fail after admission (routing, tokenizing or the proxy raising, or the
client going away mid-request) until a key's per-worker concurrency slots, or the worker's
upstream slots, are all held by dead requests: the key, or the whole worker, is then refused
for good. Every path after admission must give the slots back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.gateway.conftest import MODEL, Rig
from tests.security.admission_probe import free_upstream_slots, incoming, key_in_flight

BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
CHAT = "/v1/chat/completions"


async def post(rig: Rig, secret: str) -> int:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(rig.url + CHAT, data=BODY, headers=headers) as r,
    ):
        return r.status


@pytest.mark.parametrize("rig", [{"max_in_flight": 2, "queue_timeout_s": 0.5}], indirect=True)
async def test_failures_after_admission_do_not_lock_out_the_key_or_worker(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, secret = rig.keys.create("fragile", max_concurrent=5)
    real = rig.gateway.proxy.forward

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the proxy failed while setting up")

    monkeypatch.setattr(rig.gateway.proxy, "forward", broken)
    for _ in range(6):
        assert await post(rig, secret) == 500
    assert key_in_flight(rig.gateway, key.id) == 0
    assert free_upstream_slots(rig.gateway) == 2
    monkeypatch.setattr(rig.gateway.proxy, "forward", real)
    assert await post(rig, secret) == 200


async def test_client_leaving_while_forwarded_gives_the_slots_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, secret = rig.keys.create("leaver", max_concurrent=1)
    started = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:  # tokenizing, or a slow replica
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(rig.gateway.proxy, "forward", slow)
    free = free_upstream_slots(rig.gateway)
    task = asyncio.create_task(rig.gateway._route(incoming(BODY, secret), CHAT))
    await started.wait()
    assert key_in_flight(rig.gateway, key.id) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert key_in_flight(rig.gateway, key.id) == 0
    assert free_upstream_slots(rig.gateway) == free
