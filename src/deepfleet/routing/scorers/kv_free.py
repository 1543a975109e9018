"""kv_free = 1 - kv_usage: the free share of each replica's KV cache. The usage is as last
scraped: a replica sent requests since then (`routed`) holds more than it says, so it counts
as full as the fullest replica, never as the emptiest."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.routing.base import Endpoint, RouteRequest


class KvFree:
    name = "kv_free"

    def score(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        usage = [min(max(e.kv_usage, 0.0), 1.0) for e in endpoints]
        fullest = max(usage, default=0.0)
        return [
            1.0 - (fullest if e.routed > 0 else u) for e, u in zip(endpoints, usage, strict=True)
        ]

    def share(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> float:
        return 1.0
