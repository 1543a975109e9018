"""Least load: the replica with the fewest requests (running + waiting, or this worker's open
requests when those are more); ties rotate so an idle fleet is used evenly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deepfleet.routing.base import Decision, Endpoint, RouteRequest, RoutingPolicy
from deepfleet.routing.load_order import by_load


class LeastLoad(RoutingPolicy):
    name = "least_load"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        if params:
            raise ValueError(f"least_load takes no parameters, got {', '.join(params)}")
        self._turn = 0

    def decide(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> Decision:
        self._turn += 1
        return Decision(by_load(endpoints, self._turn), "load")
