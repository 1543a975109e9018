"""load = 1 - load / busiest_load: 1 for an idle replica, 0 for the busiest one, linear in
between (running + waiting requests: decode batch and queue)."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.routing.base import Endpoint, RouteRequest


class Load:
    name = "load"

    def score(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        busiest = max((e.load for e in endpoints), default=0)
        if busiest == 0:
            return [1.0] * len(endpoints)
        return [1.0 - e.load / busiest for e in endpoints]

    def share(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> float:
        return 1.0
