"""Scorers: one fact about an endpoint mapped to [0, 1], higher is better. Policies combine
them by weight (llm-d's profile of scorers)."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.routing.base import Endpoint, RouteRequest


def prefix_score(request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
    """Share of the request's full blocks that each replica already holds."""
    total = len(request.block_hashes)
    if total == 0:
        return [0.0] * len(endpoints)
    return [min(e.matched_blocks, total) / total for e in endpoints]


def prefill_score(request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
    """1 for the replica that would start this request's first token soonest by prefill work
    (its backlog plus this prompt's blocks it lacks), 0 for the one that would start last."""
    total = len(request.block_hashes)
    work = [e.prefill_blocks + total - min(e.matched_blocks, total) for e in endpoints]
    most = max(work, default=0)
    if most == 0:
        return [1.0] * len(endpoints)
    return [1.0 - w / most for w in work]


def load_score(endpoints: Sequence[Endpoint]) -> list[float]:
    """1 for an idle replica, 0 for the busiest one, linear in between."""
    busiest = max((e.load for e in endpoints), default=0)
    if busiest == 0:
        return [1.0] * len(endpoints)
    return [1.0 - e.load / busiest for e in endpoints]


def spread_score(endpoints: Sequence[Endpoint]) -> list[float]:
    """1 for the replica caching the least, 0 for the one caching the most: new prefixes go
    where they evict the least (SGLang's cache-aware router picks the smallest tree)."""
    held = [e.cached_blocks + e.prefill_blocks for e in endpoints]
    most = max(held, default=0)
    if most == 0:
        return [1.0] * len(endpoints)
    return [1.0 - h / most for h in held]


def kv_free_score(endpoints: Sequence[Endpoint]) -> list[float]:
    """Free share of each replica's KV cache. The usage is as last scraped: a replica sent
    requests since then (`routed`) holds more than it says, so it counts as full as the
    fullest replica, never as the emptiest."""
    usage = [min(max(e.kv_usage, 0.0), 1.0) for e in endpoints]
    fullest = max(usage, default=0.0)
    return [1.0 - (fullest if e.routed > 0 else u) for e, u in zip(endpoints, usage, strict=True)]


def by_load(endpoints: Sequence[Endpoint], start: int = 0) -> list[Endpoint]:
    """Least loaded first; ties go round the ring from `start` so they spread evenly."""
    n = len(endpoints)
    if n == 0:
        return []
    ring = [endpoints[(start + i) % n] for i in range(n)]
    return sorted(ring, key=lambda e: (e.load, e.prefill_blocks, e.kv_usage))
