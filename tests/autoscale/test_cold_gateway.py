"""A model scaled to zero, at the gateway (issue 24): it stays in /v1/models marked cold, the
gateway stays ready, and a request for it waits (counted per model, which is what the
autoscaler reads to start a replica) for the larger of `queue_timeout_s` and the route's
`cold_wait_s`, until a replica turns ready; a client that leaves frees its place."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest

from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state
from tests.gateway.conftest import MODEL, Rig

BODY = {"model": MODEL, "prompt": "x"}


def publish(rig: Rig, ready: int, cold_wait_s: float | None, queue_timeout_s: float = 0.2) -> None:
    """`ready` of the rig's engines ready, none starting; the route's cold wait."""
    route = ModelRoute(MODEL, "round_robin", queue_timeout_s=queue_timeout_s,
                       cold_wait_s=cold_wait_s)  # fmt: skip
    state = FleetState(controller_pid=1, gateway_url=rig.url, models=[route])
    state.replicas = [
        ReplicaStatus(f"{MODEL}-{i}", MODEL, "fake", e.url, state=ReplicaState.READY)
        for i, e in enumerate(rig.engines[:ready])
    ]
    write_state(rig.state_path, state)
    rig.gateway.table.refresh()


def waiting(rig: Rig) -> float:
    value = rig.gateway.metrics.registry.get_sample_value(
        "deepfleet_waiting_for_replica", {"model": MODEL}
    )
    return 0.0 if value is None else value


async def models(s: aiohttp.ClientSession, rig: Rig) -> dict[str, object]:
    async with s.get(rig.url + "/v1/models") as resp:
        (entry,) = (await resp.json())["data"]
        return dict(entry)


@pytest.mark.parametrize(
    ("cold_wait_s", "status", "ready_code"),
    [(30.0, "cold", 200), (None, "unavailable", 503)],
)
async def test_a_model_at_zero_stays_listed(
    rig: Rig,
    cold_wait_s: float | None,
    status: str,
    ready_code: int,
) -> None:
    publish(rig, 0, cold_wait_s)
    async with aiohttp.ClientSession() as s:
        entry = await models(s, rig)
        assert (entry["id"], entry["status"], entry["ready_replicas"]) == (MODEL, status, 0)
        async with s.get(rig.url + "/ready") as resp:
            assert resp.status == ready_code  # a cold model is served: the gateway is ready
    publish(rig, 1, cold_wait_s)
    async with aiohttp.ClientSession() as s:
        assert (await models(s, rig))["status"] == "ready"


async def test_a_request_for_a_cold_model_waits_for_the_replica_it_starts(
    rig: Rig,
) -> None:
    publish(rig, 0, cold_wait_s=30.0)  # queue_timeout_s 0.2 s: the cold wait is the bound
    async with aiohttp.ClientSession() as s:
        request = asyncio.ensure_future(s.post(rig.url + "/v1/completions", json=BODY))
        await asyncio.sleep(1.0)  # five times the model's queue_timeout_s
        assert not request.done() and waiting(rig) == 1
        publish(rig, 1, cold_wait_s=30.0)  # the controller started one
        async with await request as resp:
            assert resp.status == 200, await resp.text()
    assert waiting(rig) == 0


async def test_the_cold_wait_ends_with_503_at_its_bound(rig: Rig) -> None:
    publish(rig, 0, cold_wait_s=0.8)
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        async with s.post(rig.url + "/v1/completions", json=BODY) as resp:
            waited = time.monotonic() - started
            error = (await resp.json())["error"]
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert "waited 0.8s" in error["message"] and 0.8 <= waited < 2.5
    assert waiting(rig) == 0


async def test_a_client_that_leaves_frees_its_place(rig: Rig) -> None:
    publish(rig, 0, cold_wait_s=30.0)
    async with aiohttp.ClientSession() as s:
        request = asyncio.ensure_future(s.post(rig.url + "/v1/completions", json=BODY))
        for _ in range(50):
            if waiting(rig) == 1:
                break
            await asyncio.sleep(0.05)
        assert waiting(rig) == 1
        request.cancel()
    for _ in range(50):
        if waiting(rig) == 0:
            break
        await asyncio.sleep(0.05)
    assert waiting(rig) == 0


async def test_the_openai_client_lists_a_cold_model(rig: Rig) -> None:
    """The OpenAI client parses the listing; the extra field stays readable for those who
    want it (Open-WebUI keeps unknown fields of a model entry too)."""
    publish(rig, 0, cold_wait_s=30.0)
    client = openai.AsyncOpenAI(base_url=rig.url + "/v1", api_key="unused")
    rig.clients.append(client)
    (model,) = [m async for m in client.models.list()]
    assert model.id == MODEL and (model.model_extra or {})["status"] == "cold"
