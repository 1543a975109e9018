"""prefill = 1 - work / max(work), work = backlog + B - matched: 1 for the replica that would
start this request's first token soonest by prefill work (its queued prefill plus this
prompt's blocks it lacks), 0 for the one that would start last."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.routing.base import Endpoint, RouteRequest


class Prefill:
    name = "prefill"

    def score(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        total = len(request.block_hashes)
        work = [e.prefill_blocks + total - min(e.matched_blocks, total) for e in endpoints]
        most = max(work, default=0)
        if most == 0:
            return [1.0] * len(endpoints)
        return [1.0 - w / most for w in work]

    def share(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> float:
        return 1.0
