"""Prefix-cache counters read from engines' Prometheus text, before and after a run."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

QUERIES = "vllm:prefix_cache_queries_total"
HITS = "vllm:prefix_cache_hits_total"


@dataclass(frozen=True, slots=True)
class PrefixCounters:
    """Prefix-cache lookups in tokens (vLLM counts tokens queried and tokens hit)."""

    queries: float = 0.0
    hits: float = 0.0

    def __add__(self, other: PrefixCounters) -> PrefixCounters:
        return PrefixCounters(self.queries + other.queries, self.hits + other.hits)

    def __sub__(self, other: PrefixCounters) -> PrefixCounters:
        return PrefixCounters(self.queries - other.queries, self.hits - other.hits)

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries > 0 else None


def sample_sum(text: str, name: str) -> float:
    """Sum every sample of metric `name` (all label sets) in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest[:1] not in ("{", " "):
            continue
        value = rest.rsplit("}", 1)[-1] if rest.startswith("{") else rest
        total += float(value.split()[0])
    return total


def parse_counters(text: str) -> PrefixCounters:
    return PrefixCounters(sample_sum(text, QUERIES), sample_sum(text, HITS))


async def read_counters(
    session: aiohttp.ClientSession, metrics_urls: Sequence[str]
) -> PrefixCounters | None:
    """Sum the counters over engines; None when no URL answers with them."""

    async def one(url: str) -> PrefixCounters | None:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                if response.status != 200:
                    return None
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        return parse_counters(text) if QUERIES in text else None

    found = [c for c in await asyncio.gather(*(one(u) for u in metrics_urls)) if c is not None]
    if not found:
        return None
    total = PrefixCounters()
    for counters in found:
        total = total + counters
    return total
