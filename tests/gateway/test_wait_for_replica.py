"""Requests wait out short gaps (issue 20): with no ready replica of their model while one is
starting or restarting, they are held up to the model's `queue_timeout_s` instead of an
instant 503; a client that leaves meanwhile frees its place."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from deepfleet.fleet.state import ReplicaState
from tests.gateway.conftest import MODEL, Rig

BODY = {"model": MODEL, "prompt": "x"}


def gauge(rig: Rig, name: str) -> float:
    labels = {"model": MODEL} if name == "deepfleet_waiting_for_replica" else None
    value = rig.gateway.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_request_waits_for_a_restarting_replica(rig: Rig) -> None:
    rig.publish(ready=[False, False])  # both restarting
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        request = asyncio.ensure_future(s.post(rig.url + "/v1/completions", json=BODY))
        await asyncio.sleep(0.6)
        assert not request.done() and gauge(rig, "deepfleet_waiting_for_replica") == 1
        rig.publish(ready=[False, True])  # one came back
        async with await request as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["choices"][0]["text"].startswith("e1-")
        assert time.monotonic() - started >= 0.6
    assert gauge(rig, "deepfleet_waiting_for_replica") == 0
    assert gauge(rig, "deepfleet_replica_wait_seconds_count") == 1


async def test_the_wait_ends_with_503_at_the_models_timeout(rig: Rig) -> None:
    rig.publish(ready=[False, False], queue_timeout_s=0.5)
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        async with s.post(rig.url + "/v1/completions", json=BODY) as resp:
            waited = time.monotonic() - started
            error = (await resp.json())["error"]
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert error["code"] == "no_ready_replica" and "waited 0.5s" in error["message"]
    assert 0.5 <= waited < 2.0
    assert gauge(rig, "deepfleet_waiting_for_replica") == 0


async def test_nothing_coming_is_503_at_once(rig: Rig) -> None:
    rig.publish(ready=[False, False], down=ReplicaState.FAILED)
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        async with s.post(rig.url + "/v1/completions", json=BODY) as resp:
            error = (await resp.json())["error"]
    assert resp.status == 503 and "none is starting" in error["message"]
    assert time.monotonic() - started < 0.5


async def test_a_client_that_leaves_while_waiting_frees_its_place(rig: Rig) -> None:
    rig.publish(ready=[False, False])
    queue = rig.gateway.admission.queue
    _reader, writer = await asyncio.open_connection("127.0.0.1", int(rig.url.rsplit(":", 1)[1]))
    body = json.dumps(BODY).encode()
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    for _ in range(100):
        if gauge(rig, "deepfleet_waiting_for_replica") == 1:
            break
        await asyncio.sleep(0.02)
    assert gauge(rig, "deepfleet_waiting_for_replica") == 1
    writer.close()  # the client leaves
    for _ in range(100):
        if gauge(rig, "deepfleet_waiting_for_replica") == 0:
            break
        await asyncio.sleep(0.02)
    assert gauge(rig, "deepfleet_waiting_for_replica") == 0
    assert queue.free == rig.gateway.settings.max_in_flight  # its admission slot is free again
