"""spread = 1 - held / most_held, held = cached + backlog: 1 for the replica caching the
least, 0 for the one caching the most, so new prefixes go where they evict the least
(SGLang's cache-aware router picks the smallest tree). It counts the blocks a replica was sent
and is still computing, so a replica busy with its first prefix does not look empty.

It counts only as far as no replica holds the prompt: its share of its weight is
1 - the best prefix score, so a prompt cached somewhere follows its cache instead."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.routing.base import Endpoint, RouteRequest
from deepfleet.routing.scorers.prefix import Prefix

_PREFIX = Prefix()


class Spread:
    name = "spread"

    def score(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        held = [e.cached_blocks + e.prefill_blocks for e in endpoints]
        most = max(held, default=0)
        if most == 0:
            return [1.0] * len(endpoints)
        return [1.0 - h / most for h in held]

    def share(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> float:
        return 1.0 - max(_PREFIX.score(request, endpoints))
