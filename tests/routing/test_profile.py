"""kv_aware's scorer profile: custom weights change the order; the default profile decides
exactly as the fixed formula it replaced (same floats, same ties), here written out as the
oracle."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from deepfleet.config.routing import DEFAULT_SCORERS
from deepfleet.routing import Decision, Endpoint, RouteRequest, build_policy
from deepfleet.routing.load_order import by_load
from deepfleet.routing.policies.kv_aware import KvAware
from deepfleet.routing.scorers import SCORERS, known_scorers
from deepfleet.routing.scorers.profile import Profile

REQ = RouteRequest("m", block_hashes=tuple(range(10)), prompt_tokens=160)


def ep(name: str, **facts: int | float) -> Endpoint:
    return Endpoint(name, "m", f"http://{name}", **facts)  # type: ignore[arg-type]


class Formula:
    """The fixed formula, written out: 3 prefix + prefill + load + 0.5 kv + (1 - best
    prefix) spread, ties to the replica chosen longest ago, then the spill rule."""

    def __init__(self) -> None:
        self._turn = 0
        self._chosen: dict[str, int] = {}

    def decide(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if len(endpoints) < 2:
            return Decision(list(endpoints), "single")
        self._turn += 1
        n = len(endpoints)
        ring = [endpoints[(self._turn + i) % n] for i in range(n)]
        total = len(request.block_hashes)
        prefix = [min(e.matched_blocks, total) / total if total else 0.0 for e in ring]
        work = [e.prefill_blocks + total - min(e.matched_blocks, total) for e in ring]
        prefill = [1.0 - w / max(work) if max(work) else 1.0 for w in work]
        busiest = max(e.load for e in ring)
        load = [1.0 - e.load / busiest if busiest else 1.0 for e in ring]
        usage = [min(max(e.kv_usage, 0.0), 1.0) for e in ring]
        kv = [1.0 - (max(usage) if e.routed > 0 else u) for e, u in zip(ring, usage, strict=True)]
        held = [e.cached_blocks + e.prefill_blocks for e in ring]
        spread = [1.0 - h / max(held) if max(held) else 1.0 for h in held]
        novelty = 1.0 * (1.0 - max(prefix))
        scores = [
            3.0 * prefix[i] + 1.0 * prefill[i] + 1.0 * load[i] + 0.5 * kv[i] + novelty * spread[i]
            for i in range(n)
        ]
        chosen = [self._chosen.get(e.replica_id, 0) for e in ring]
        ranked = [ring[i] for i in sorted(range(n), key=lambda i: (-scores[i], chosen[i]))]
        best = ranked[0]
        least = min(e.load for e in ring)
        excess = best.load - least
        if best.load >= 1.5 * least and (excess >= 32 or (best.waiting > 0 and excess >= 4)):
            order = by_load(ring)
            self._chosen[order[0].replica_id] = self._turn
            return Decision(order, "spill")
        self._chosen[best.replica_id] = self._turn
        return Decision(ranked, "prefix" if best.matched_blocks > 0 else "load")


SNAPSHOTS = [
    [ep("a", matched_blocks=9, running=3), ep("b", running=1)],
    [ep("a", matched_blocks=2, prefill_blocks=60), ep("b"), ep("c", kv_usage=0.3, routed=2)],
    [ep("a", matched_blocks=10, running=8, waiting=2), ep("b", running=2)],
    [ep("a", cached_blocks=900), ep("b", cached_blocks=100), ep("c", prefill_blocks=137)],
    [ep(f"r{i}", running=1, prefill_blocks=137) for i in range(4)],
    [ep("a", matched_blocks=5, kv_usage=0.9), ep("b", matched_blocks=5, in_flight=3)],
]


def random_snapshot(rng: random.Random) -> list[Endpoint]:
    return [
        ep(
            f"r{i}",
            in_flight=rng.choice((0, 0, 1, 5)),
            running=rng.randrange(12),
            waiting=rng.choice((0, 0, 3)),
            kv_usage=rng.choice((0.0, 0.1, 1 / 3, 0.7)),
            routed=rng.choice((0, 0, 2)),
            matched_blocks=rng.choice((0, 0, 3, 7, 10)),
            prefill_blocks=rng.choice((0, 17, 137)),
            cached_blocks=rng.choice((0, 50, 333)),
        )
        for i in range(rng.randrange(1, 6))
    ]


@pytest.mark.parametrize("endpoints", SNAPSHOTS)
def test_default_profile_decides_as_the_formula(endpoints: list[Endpoint]) -> None:
    policy, formula = KvAware(), Formula()
    for request in (REQ, RouteRequest("m"), RouteRequest("m", block_hashes=(1, 2, 3))):
        got, want = policy.decide(request, endpoints), formula.decide(request, endpoints)
        assert (got.order, got.reason) == (want.order, want.reason)


def test_default_profile_decides_as_the_formula_over_random_fleets() -> None:
    """One policy over a long run (its tie-breaking memory carries over between requests)."""
    rng = random.Random(7)
    policy, formula = KvAware(), Formula()
    for _ in range(3000):
        endpoints = random_snapshot(rng)
        request = RouteRequest("m", block_hashes=tuple(range(rng.choice((0, 10, 23)))))
        got, want = policy.decide(request, endpoints), formula.decide(request, endpoints)
        assert (got.order, got.reason) == (want.order, want.reason)


def test_default_profile_sums_bit_for_bit() -> None:
    rng = random.Random(3)
    for _ in range(500):
        ring = random_snapshot(rng)
        request = RouteRequest("m", block_hashes=tuple(range(rng.choice((0, 10, 23)))))
        total = len(request.block_hashes)
        p = [min(e.matched_blocks, total) / total if total else 0.0 for e in ring]
        by = {n: SCORERS[n].score(request, ring) for n in known_scorers()}
        novelty = 1.0 * (1.0 - max(p))
        want = [
            3.0 * by["prefix"][i] + 1.0 * by["prefill"][i] + 1.0 * by["load"][i]
            + 0.5 * by["kv_free"][i] + novelty * by["spread"][i]
            for i in range(len(ring))
        ]  # fmt: skip
        assert Profile(DEFAULT_SCORERS).scores(request, ring) == want


@pytest.mark.parametrize(
    ("scorers", "endpoints", "first"),
    [
        # the default follows the cache onto a busier replica ...
        (DEFAULT_SCORERS, [ep("cached", matched_blocks=6, running=6), ep("idle", running=1)],
         "cached"),
        # ... a load-only profile does not
        ({"load": 1}, [ep("cached", matched_blocks=6, running=6), ep("idle", running=1)],
         "idle"),
        # kv_free alone: the emptier KV cache
        ({"kv_free": 1}, [ep("full", kv_usage=0.9), ep("empty", kv_usage=0.1)], "empty"),
        # more weight on load than on the cache: the idle one
        ({"prefix": 1, "load": 5}, [ep("cached", matched_blocks=10, running=9), ep("idle")],
         "idle"),
        # spread alone: where the least is cached
        ({"spread": 1}, [ep("big", cached_blocks=900), ep("small", cached_blocks=10)], "small"),
        # prefill alone: the shorter prefill backlog
        ({"prefill": 1}, [ep("queued", prefill_blocks=90), ep("free", prefill_blocks=5)], "free"),
    ],
)  # fmt: skip
def test_custom_weights_change_the_order(
    scorers: dict[str, float], endpoints: list[Endpoint], first: str
) -> None:
    policy = build_policy("kv_aware", {"scorers": scorers, "spill_abs": 1000})
    for _ in range(len(endpoints)):  # whatever the rotation
        assert policy.decide(REQ, endpoints).order[0].replica_id == first


def test_the_order_of_the_scorers_in_the_config_does_not_matter() -> None:
    rng = random.Random(5)
    shuffled = dict(reversed(DEFAULT_SCORERS.items()))
    for _ in range(200):
        ring = random_snapshot(rng)
        assert Profile(shuffled).scores(REQ, ring) == Profile(DEFAULT_SCORERS).scores(REQ, ring)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"scorers": {"prefx": 1}}, "unknown scorer"),
        ({"scorers": {"load": -1}}, ">= 0"),
        ({"spill_rel": 0.5}, "spill_rel"),
        ({"prefix_weight": 3}, "unknown parameter"),
    ],
)
def test_bad_profiles_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_policy("kv_aware", params)
