"""Round robin: each request starts one replica further along the ring."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.routing.base import Endpoint, RouteRequest


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def order(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        if not endpoints:
            return []
        start = self._next % len(endpoints)
        self._next += 1
        return [*endpoints[start:], *endpoints[:start]]
