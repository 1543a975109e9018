"""The Router: snapshots what its interfaces report, asks the model's policy, records the
decision; tokens only for policies that read them, pending blocks only for those that read
KV events."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from deepfleet.config.kvcache import KvRoutingSpec
from deepfleet.engines.load import EngineLoad
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus
from deepfleet.kvcache.index import KvIndex
from deepfleet.kvcache.prompts import PromptBlocks
from deepfleet.routing import RouteRequest
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.metrics import RoutingMetrics
from deepfleet.routing.router import Router

BODY = b'{"model": "m", "messages": []}'


@dataclass
class FakePrompts:
    blocks_out: PromptBlocks
    asked: list[tuple[str, int]]

    async def blocks(self, model: str, path: str, body: bytes, block_size: int) -> PromptBlocks:
        self.asked.append((model, block_size))
        return self.blocks_out


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def fleet(routing: str, block_size: int | None = 32) -> FleetState:
    return FleetState(
        1,
        "",
        models=[ModelRoute("m", routing, block_size=block_size)],
        replicas=[
            ReplicaStatus(f"m-{i}", "m", "vllm", f"http://e{i}", ReplicaState.READY)
            for i in range(2)
        ],
    )


def router(
    routing: str, hashes: tuple[int, ...] = (1, 2, 3), **settings: object
) -> tuple[Router, KvIndex, dict[str, EngineLoad], FakePrompts, Clock]:
    table = EndpointTable(Path("/nonexistent"))
    state = fleet(routing)
    table.load(state)
    index = KvIndex()
    loads: dict[str, EngineLoad] = {}
    prompts = FakePrompts(PromptBlocks(hashes, 16 * len(hashes), 99), [])
    clock = Clock()
    spec = {**KvRoutingSpec().model_dump(), **settings}
    r = Router(table, index, loads, prompts, RoutingMetrics(), spec, clock=clock, wall=clock)
    r.load(state)
    return r, index, loads, prompts, clock


def decisions(r: Router) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels.values()): s.value
        for family in r.metrics.registry.collect()
        for s in family.samples
        if s.name == "deepfleet_routing_decisions_total"
    }


@pytest.mark.parametrize(
    ("routing", "tokens", "pending"),
    [
        ("kv_aware", True, True),
        ("prefix_hash", True, False),
        ("least_load", False, False),
        ("round_robin", False, False),
    ],
)
async def test_each_policy_gets_what_it_needs(routing: str, tokens: bool, pending: bool) -> None:
    r, index, _, prompts, _ = router(routing)
    now = r.request_now("m", BODY)
    assert (now is None) == tokens
    request = await r.request("m", "/v1/chat/completions", BODY)
    assert request.block_hashes == ((1, 2, 3) if tokens else ())
    assert prompts.asked == ([("m", 32)] if tokens else [])  # the state's block size
    first = r.decide(request).order[0].replica_id
    assert index.backlog(first, 100.0) == (3 if pending else 0)


def test_the_snapshot_carries_load_routed_and_blocks() -> None:
    r, index, loads, _, clock = router("kv_aware")
    loads["m-1"] = EngineLoad(running=4, waiting=1, kv_usage=0.5)
    index.assume("m-0", [1, 2], until=200.0, at=0.0)
    request = RouteRequest("m", block_hashes=(1, 2, 3))
    before = {e.replica_id: e for e in r.snapshot(r.health.ready("m"), request)}
    assert (before["m-0"].matched_blocks, before["m-0"].prefill_blocks) == (2, 2)
    assert (before["m-1"].running, before["m-1"].waiting, before["m-1"].kv_usage) == (4, 1, 0.5)
    first = r.decide(request).order[0].replica_id
    after = {e.replica_id: e for e in r.snapshot(r.health.ready("m"), request)}
    assert after[first].routed == 1
    r.scraped(first)  # the engine's counts now include it
    assert {e.routed for e in r.snapshot(r.health.ready("m"), request)} == {0}
    clock.now = 500.0  # past pending_ttl_s: what was sent no longer counts as held
    assert {e.prefill_blocks for e in r.snapshot(r.health.ready("m"), request)} == {0}


def test_decisions_are_counted_by_policy_and_reason() -> None:
    r, *_ = router("round_robin")
    for _ in range(3):
        r.decide(RouteRequest("m"))
    assert decisions(r) == {("m", "round_robin", "order"): 3.0}


def test_no_ready_replica_is_an_empty_decision_and_not_counted() -> None:
    r, *_ = router("kv_aware")
    decision = r.decide(RouteRequest("other"))
    assert (decision.order, decision.reason) == ([], "none")
    assert decisions(r) == {}


def test_policies_get_their_settings_from_the_section() -> None:
    r, *_ = router("kv_aware", scorers={"load": 2.0}, spill_abs=3)
    policy = r.policy("m")
    assert policy is not None and policy.name == "kv_aware"
    assert policy.profile.weights == {"load": 2.0}  # type: ignore[attr-defined]
    assert policy.spill.spill_abs == 3  # type: ignore[attr-defined]
    hashing, *_ = router("prefix_hash", load_factor=2.0)
    assert hashing.policy("m").load_factor == 2.0  # type: ignore[union-attr]
