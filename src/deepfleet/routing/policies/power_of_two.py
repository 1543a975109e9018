"""Power of two choices: sample two replicas at random and take the less loaded one. Nearly as
even as least load, but workers that share stale load numbers do not all pick the same
replica (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing")."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from deepfleet.routing.base import Decision, Endpoint, RouteRequest, RoutingPolicy


class PowerOfTwo(RoutingPolicy):
    name = "power_of_two"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        params = dict(params or {})
        seed = params.pop("seed", None)
        if params:
            raise ValueError(f"power_of_two takes only `seed`, got {', '.join(params)}")
        self._rng = random.Random(seed)

    def decide(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if len(endpoints) < 2:
            return Decision(list(endpoints), "single")
        a, b = self._rng.sample(range(len(endpoints)), 2)
        first, second = (a, b) if endpoints[a].load <= endpoints[b].load else (b, a)
        rest = sorted((e for i, e in enumerate(endpoints) if i not in (a, b)), key=lambda e: e.load)
        return Decision([endpoints[first], endpoints[second], *rest], "load")
