"""The router and its feeds against simulated engines that publish real KV events over ZMQ."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from deepfleet.config.kvcache import KvRoutingSpec
from deepfleet.kvcache.relay import EventRelay, relay_endpoint
from deepfleet.routing import Endpoint
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds
from deepfleet.routing.follow import event_ports
from tests.kvcache.events_util import until
from tests.kvcache.sim_fleet import MODEL, chat, route_and_send, sim_fleet, tokenizer_folder

pytestmark = pytest.mark.skipif(
    not (tokenizer_folder() / "tokenizer.json").is_file(), reason="bundled model not prepared"
)


def conversation(system: str, *turns: str, max_tokens: int = 4) -> bytes:
    messages = [{"role": "system", "content": system}]
    for turn in turns:
        messages.append({"role": "user", "content": turn})
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "ignore_eos": True}
    return json.dumps(body).encode()


SYSTEM_A = " ".join(f"alpha{i} rules the kingdom of text" for i in range(60))
SYSTEM_B = " ".join(f"beta{i} governs another realm" for i in range(60))


async def test_requests_follow_their_cached_prefix(tmp_path: Path) -> None:
    async with sim_fleet(tmp_path, count=3) as fleet, aiohttp.ClientSession() as session:
        context = await started(feeds_of(fleet.state_path))
        try:
            first, route = await route_and_send(
                context, session, fleet, conversation(SYSTEM_A, "hello")
            )
            assert len(route.block_hashes) == route.prompt_tokens // 16 > 20
            await until(lambda: len(context.index) >= len(route.block_hashes))
            # Later requests sharing the system prompt go where it is cached.
            for question in ("how are you", "what is new", "tell me more"):
                chosen, again = await route_and_send(
                    context, session, fleet, conversation(SYSTEM_A, question)
                )
                assert chosen == first
            # Another prompt starts elsewhere (nothing cached anywhere: least loaded).
            await route_and_send(context, session, fleet, conversation(SYSTEM_B, "hi"))
            await until(lambda: len(context.index.match(again.block_hashes)) > 0)
            endpoints = [
                Endpoint(f"{MODEL}-{i}", MODEL, e.url) for i, e in enumerate(fleet.engines)
            ]
            snap = context.router.snapshot(endpoints, again)
            matched = {e.replica_id: e.matched_blocks for e in snap}
            assert matched[first] >= len(again.block_hashes) - 2
            decisions = sample(context, "deepfleet_routing_decisions_total")
            assert decisions[("m", "kv_aware", "prefix")] == 3
            assert decisions[("m", "kv_aware", "load")] >= 1
        finally:
            await context.stop()
        # The engine agrees: its own counters saw the hits.
        hits = [e.engine.cache.hits for e in fleet.engines]
        assert max(hits) >= 3 * (len(route.block_hashes) - 2) * 16


async def test_one_hot_prefix_spills_to_an_idle_replica(tmp_path: Path) -> None:
    """Every request shares one prefix; the replica holding it queues (max_num_seqs 4), so
    requests spill to the other replica instead of piling up there."""
    async with (
        sim_fleet(tmp_path, count=2, max_num_seqs=4, speed=0.005) as fleet,
        aiohttp.ClientSession() as session,
    ):
        context = await started(feeds_of(fleet.state_path))
        try:
            await route_and_send(context, session, fleet, conversation(SYSTEM_A, "warm up"))
            await until(lambda: len(context.index) > 0)
            bodies = [conversation(SYSTEM_A, f"question {i}", max_tokens=48) for i in range(24)]
            chosen = []
            for b in bodies:  # arrivals 50 ms apart, each served for ~2 s
                chosen.append(asyncio.create_task(route_and_send(context, session, fleet, b)))
                await asyncio.sleep(0.05)
            replicas = [replica for replica, _ in await asyncio.gather(*chosen)]
            decisions = sample(context, "deepfleet_routing_decisions_total")
            assert decisions.get(("m", "kv_aware", "spill"), 0) >= 1
            assert min(replicas.count("m-0"), replicas.count("m-1")) >= 4
        finally:
            await context.stop()


async def test_an_engine_restart_in_the_state_clears_its_entries(tmp_path: Path) -> None:
    async with sim_fleet(tmp_path, count=2) as fleet, aiohttp.ClientSession() as session:
        context = await started(feeds_of(fleet.state_path))
        try:
            first, _ = await route_and_send(context, session, fleet, conversation(SYSTEM_A, "hi"))
            await until(lambda: context.index.blocks_of(first) > 0)
            index = int(first.rsplit("-", 1)[1])
            fleet.restarts[index] += 1
            fleet.publish()
            await until(lambda: context.index.blocks_of(first) == 0)
            assert context.streams.stats.restarts == 1
        finally:
            await context.stop()


async def test_a_gap_resyncs_by_resetting_the_engine_cache(tmp_path: Path) -> None:
    async with sim_fleet(tmp_path, count=1) as fleet, aiohttp.ClientSession() as session:
        # Events published before anyone listens are lost: the subscriber sees a gap.
        await chat(session, fleet.engines[0].url, conversation(SYSTEM_A, "x"))
        context = feeds_of(fleet.state_path)
        await context.start()
        try:
            await asyncio.sleep(0.3)  # the engine's PUB socket connects to our bound port
            _, route = await route_and_send(context, session, fleet, conversation(SYSTEM_B, "y"))
            await until(lambda: sample(context, "deepfleet_kv_event_resyncs_total") != {})
            assert sample(context, "deepfleet_kv_event_resyncs_total") == {("m-0", "reset"): 1}
            # After the reset both sides agree again: a new prompt is learned and matched.
            _, route = await route_and_send(context, session, fleet, conversation(SYSTEM_A, "z"))
            await until(lambda: len(context.index.match(route.block_hashes)) == 1)
        finally:
            await context.stop()


async def test_workers_share_events_through_the_relay(tmp_path: Path) -> None:
    async with sim_fleet(tmp_path, count=2) as fleet, aiohttp.ClientSession() as session:
        relay = EventRelay(event_ports(fleet.state_path), relay_endpoint(fleet.state_path))
        relay.start()
        workers = [
            feeds_of(fleet.state_path, relay=relay_endpoint(fleet.state_path)) for _ in range(2)
        ]
        for w in workers:
            await w.start()
        try:
            await asyncio.sleep(1.5)  # the relay binds the engines' ports on its first refresh
            _, route = await route_and_send(
                workers[0], session, fleet, conversation(SYSTEM_A, "hi")
            )
            # The relay forwards the engine's batch (wait for it: under load the batch can come
            # after the router's own assumption already matches the routing worker's index),
            # and both workers learn it, though only one routed it.
            await until(lambda: relay.forwarded > 0, within_s=15)
            for w in workers:
                await until(lambda w=w: len(w.index.match(route.block_hashes)) == 1)
        finally:
            for w in workers:
                await w.stop()
            relay.stop()


def feeds_of(state_path: Path, relay: str | None = None) -> RoutingFeeds:
    """What a gateway worker builds: the endpoint table and the router's feeds on it."""
    table = EndpointTable(state_path)
    return RoutingFeeds(table, KvRoutingSpec().model_dump(), relay=relay)


async def started(context: RoutingFeeds) -> RoutingFeeds:
    """Start, then give the engines' PUB sockets time to connect to the bound ports (what
    they publish before that is lost, which a resync would then repair)."""
    await context.start()
    await asyncio.sleep(0.5)
    return context


def sample(context: RoutingFeeds, name: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for family in context.metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                out[tuple(s.labels.values())] = s.value
    return out
