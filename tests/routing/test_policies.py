"""Routing policies: each orders every endpoint, prefers what its formula says, and says why."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from deepfleet.routing import Endpoint, RouteRequest, build_policy, known_policies
from deepfleet.routing.policies.prefix_hash import PrefixHash

REQ = RouteRequest("m", block_hashes=tuple(range(10)), prompt_tokens=160, prefix_key=12345)


def ep(name: str, **facts: int | float) -> Endpoint:
    return Endpoint(name, "m", f"http://{name}", **facts)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", known_policies())
def test_every_policy_orders_all_endpoints(name: str) -> None:
    policy = build_policy(name)
    endpoints = [ep(f"r{i}", running=i) for i in range(5)]
    for _ in range(10):
        order = policy.decide(REQ, endpoints).order
        assert sorted(e.replica_id for e in order) == [f"r{i}" for i in range(5)]
    assert policy.decide(REQ, []).order == []
    assert [e.replica_id for e in policy.decide(REQ, endpoints[:1]).order] == ["r0"]


def test_registry_refuses_unknown_names_and_parameters() -> None:
    with pytest.raises(ValueError, match="unknown routing policy"):
        build_policy("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        build_policy("kv_aware", {"prefix_wieght": 1})
    with pytest.raises(ValueError, match="no parameters"):
        build_policy("round_robin", {"x": 1})


def test_load_counts_what_was_routed_since_the_scrape() -> None:
    assert ep("a", running=2, waiting=1, routed=3).load == 6
    assert ep("a", running=2, in_flight=9).load == 9


@pytest.mark.parametrize(
    ("endpoints", "first", "reason"),
    [
        # the replica holding most of the prompt wins over an idler one
        ([ep("a", matched_blocks=9, running=3), ep("b", running=1)], "a", "prefix"),
        # no replica holds any of it: the least loaded one
        ([ep("a", running=3), ep("b", running=1)], "b", "load"),
        # partial matches: the longer one
        ([ep("a", matched_blocks=2), ep("b", matched_blocks=8)], "b", "prefix"),
        # the cache-best replica queues requests and has many more: spill to the least loaded
        ([ep("a", matched_blocks=10, running=8, waiting=2), ep("b", running=2)], "b", "spill"),
        # busier but not queueing: keep the cache
        ([ep("a", matched_blocks=10, running=20), ep("b", running=2)], "a", "prefix"),
        # far busier, counting the requests routed since the last scrape: spill anyway
        ([ep("a", matched_blocks=10, running=10, routed=30), ep("b", running=2)], "b", "spill"),
        # a new prompt goes where the least is cached
        ([ep("a", cached_blocks=900), ep("b", cached_blocks=100)], "b", "load"),
        # nothing cached anywhere: the replica with the shorter prefill backlog
        ([ep("a", prefill_blocks=40), ep("b", prefill_blocks=5)], "b", "load"),
        # a prefill backlog does not outweigh holding most of the prompt ...
        ([ep("a", matched_blocks=9, prefill_blocks=60), ep("b")], "a", "prefix"),
        # ... but it does outweigh a short match
        ([ep("a", matched_blocks=2, prefill_blocks=60), ep("b")], "b", "load"),
        # a queue, but an imbalance below spill_queued keeps the cache
        ([ep("a", matched_blocks=10, running=4, waiting=1), ep("b", running=2)], "a", "prefix"),
        # equal matches: the emptier KV cache and load decide
        ([ep("a", matched_blocks=5, kv_usage=0.9), ep("b", matched_blocks=5)], "b", "prefix"),
    ],
)
def test_kv_aware(endpoints: list[Endpoint], first: str, reason: str) -> None:
    decision = build_policy("kv_aware").decide(REQ, endpoints)
    assert (decision.order[0].replica_id, decision.reason) == (first, reason)


def test_kv_aware_weights_are_configurable() -> None:
    endpoints = [ep("a", matched_blocks=6, running=6), ep("b", running=1)]
    assert build_policy("kv_aware").decide(REQ, endpoints).order[0].replica_id == "a"
    load_only = build_policy("kv_aware", {"scorers": {"load": 1, "kv_free": 0.5, "spread": 1}})
    assert load_only.decide(REQ, endpoints).order[0].replica_id == "b"


def test_kv_aware_spreads_an_idle_fleet_evenly() -> None:
    policy = build_policy("kv_aware")
    endpoints = [ep(f"r{i}") for i in range(4)]
    firsts = Counter(
        policy.decide(RouteRequest("m"), endpoints).order[0].replica_id for _ in range(40)
    )
    assert set(firsts.values()) == {10}


def test_kv_aware_counts_a_prefix_still_being_computed_as_cached() -> None:
    """A new prompt avoids a replica still computing another new prefix (its blocks are sent,
    not yet announced) for one that finished its own: both hold one prefix, and the first
    would make this prompt wait for that prefill."""
    new = RouteRequest("m", block_hashes=tuple(range(1000, 1137)))
    computing = ep("computing", running=1, prefill_blocks=137)
    done = ep("done", running=1, cached_blocks=137)
    for endpoints in ([computing, done], [done, computing]):
        decision = build_policy("kv_aware").decide(new, endpoints)
        assert (decision.order[0].replica_id, decision.reason) == ("done", "load")


def test_kv_aware_does_not_trust_the_kv_usage_of_a_replica_sent_work_since_the_scrape() -> None:
    """Scraped before its last request arrived, a replica reads empty; it counts as the
    fullest one until the next scrape, so it is not picked again for its stale emptiness."""
    endpoints = [
        ep("just-sent", routed=1, kv_usage=0.0),
        ep("quiet", running=1, kv_usage=0.1),
        ep("full", running=1, kv_usage=0.5),
    ]
    for turn in range(3):
        ring = endpoints[turn:] + endpoints[:turn]
        decision = build_policy("kv_aware").decide(REQ, ring)
        assert decision.order[0].replica_id == "quiet"
    fresh = [ep("scraped", running=1, kv_usage=0.0), *endpoints[1:]]
    assert build_policy("kv_aware").decide(REQ, fresh).order[0].replica_id == "scraped"


def test_kv_aware_breaks_ties_toward_the_replica_chosen_longest_ago() -> None:
    """With every replica equally busy (each computing one new prefix), a new prefix goes to
    the replica that was given work longest ago, whose prefill ends first, and never twice to
    one replica before every other had a turn."""
    policy = build_policy("kv_aware")
    busy = [ep(f"r{i}", running=1, prefill_blocks=137) for i in range(4)]
    held = [replace(e, matched_blocks=10) if e.replica_id == "r2" else e for e in busy]
    assert policy.decide(REQ, held).order[0].replica_id == "r2"
    picks = [
        policy.decide(RouteRequest("m", block_hashes=(i,)), busy).order[0].replica_id
        for i in range(8)
    ]
    assert sorted(picks[:3]) == ["r0", "r1", "r3"]
    assert picks[3] == "r2"
    assert picks[4:] == picks[:4]


def test_least_load_and_power_of_two_prefer_idle_replicas() -> None:
    endpoints = [ep("busy", running=10), ep("idle"), ep("mid", running=5)]
    assert build_policy("least_load").decide(REQ, endpoints).order[0].replica_id == "idle"
    p2c = build_policy("power_of_two", {"seed": 1})
    firsts = Counter(p2c.decide(REQ, endpoints).order[0].replica_id for _ in range(300))
    assert firsts["busy"] == 0 and firsts["idle"] > firsts["mid"]


def test_prefix_hash_is_sticky_and_moves_few_keys_when_a_replica_leaves() -> None:
    policy = PrefixHash()
    endpoints = [ep(f"r{i}") for i in range(8)]
    keys = range(0, 2**64, 2**64 // 2000)
    before = {
        k: policy.decide(RouteRequest("m", prefix_key=k), endpoints).order[0].replica_id
        for k in keys
    }
    again = {
        k: policy.decide(RouteRequest("m", prefix_key=k), endpoints).order[0].replica_id
        for k in keys
    }
    assert before == again
    share = Counter(before.values())
    assert min(share.values()) > 2000 / 8 / 2  # vnodes spread keys roughly evenly
    fewer = [e for e in endpoints if e.replica_id != "r3"]
    after = {
        k: policy.decide(RouteRequest("m", prefix_key=k), fewer).order[0].replica_id for k in keys
    }
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "r3" for k in moved)


def test_prefix_hash_bounded_load_passes_a_hot_key_on() -> None:
    policy = PrefixHash({"load_factor": 1.25})
    endpoints = [ep(f"r{i}") for i in range(4)]
    owner = policy.decide(REQ, endpoints).order[0].replica_id
    hot = [ep(e.replica_id, running=20 if e.replica_id == owner else 1) for e in endpoints]
    decision = policy.decide(REQ, hot)
    assert decision.order[0].replica_id != owner and decision.reason == "spill"
    assert decision.order[1].replica_id == owner  # still the next choice on failure
