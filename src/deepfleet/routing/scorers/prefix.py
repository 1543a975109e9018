"""prefix = matched / B: the share of the request's B full blocks that each replica already
holds (cache affinity: what it need not compute)."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.routing.base import Endpoint, RouteRequest


class Prefix:
    name = "prefix"

    def score(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        total = len(request.block_hashes)
        if total == 0:
            return [0.0] * len(endpoints)
        return [min(e.matched_blocks, total) / total for e in endpoints]

    def share(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> float:
        return 1.0
