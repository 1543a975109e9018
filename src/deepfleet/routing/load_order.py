"""Least loaded first: the order several policies fall back to."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.routing.base import Endpoint


def by_load(endpoints: Sequence[Endpoint], start: int = 0) -> list[Endpoint]:
    """Least loaded first; ties go round the ring from `start` so they spread evenly."""
    n = len(endpoints)
    if n == 0:
        return []
    ring = [endpoints[(start + i) % n] for i in range(n)]
    return sorted(ring, key=lambda e: (e.load, e.prefill_blocks, e.kv_usage))
