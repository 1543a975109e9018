"""Round robin: each request starts one replica further along the ring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deepfleet.routing.base import Decision, Endpoint, RouteRequest, RoutingPolicy


class RoundRobin(RoutingPolicy):
    name = "round_robin"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        if params:
            raise ValueError(f"round_robin takes no parameters, got {', '.join(params)}")
        self._next = 0

    def decide(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if not endpoints:
            return Decision([], "order")
        start = self._next % len(endpoints)
        self._next += 1
        return Decision([*endpoints[start:], *endpoints[:start]], "order")
