"""Engine load from each replica's Prometheus /metrics (vLLM's names), read in the background
every `interval_s`, never on a request's path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
QUERIES = "vllm:prefix_cache_queries_total"
HITS = "vllm:prefix_cache_hits_total"
_WANTED = (RUNNING, WAITING, KV_USAGE, QUERIES, HITS)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_queries: float = 0.0  # tokens looked up in the prefix cache since engine start
    prefix_hits: float = 0.0  # tokens found
    at: float = 0.0


def parse_load(text: str, at: float = 0.0) -> EngineLoad | None:
    """Sum each wanted metric over its label sets (data-parallel engines have several); None
    when the text has none of them."""
    sums = dict.fromkeys(_WANTED, 0.0)
    seen = False
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name, _, rest = line.partition("{")
        if not rest:
            name, _, value = line.partition(" ")
        else:
            value = rest.rpartition("}")[2]
        if name in sums:
            try:
                sums[name] += float(value.split()[0])
            except (ValueError, IndexError):
                continue
            seen = True
    if not seen:
        return None
    return EngineLoad(
        running=int(sums[RUNNING]),
        waiting=int(sums[WAITING]),
        kv_usage=sums[KV_USAGE],
        prefix_queries=sums[QUERIES],
        prefix_hits=sums[HITS],
        at=at,
    )


class LoadScraper:
    """Keeps `loads` current for the replicas in `targets` (replica id -> base URL)."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        interval_s: float = 0.5,
        on_scrape: Callable[[str, EngineLoad], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.targets: dict[str, str] = {}
        self.loads: dict[str, EngineLoad] = {}
        self._session = session
        self._on_scrape = on_scrape
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=max(1.0, 2 * interval_s))

    def set_targets(self, targets: dict[str, str]) -> None:
        self.targets = dict(targets)
        for gone in set(self.loads) - set(targets):
            del self.loads[gone]

    async def run(self) -> None:
        while True:
            started = self._clock()
            await self.scrape_all()
            await asyncio.sleep(max(0.0, self.interval_s - (self._clock() - started)))

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self._one(r, u) for r, u in list(self.targets.items())))

    async def _one(self, replica: str, url: str) -> None:
        try:
            async with self._session().get(url + "/metrics", timeout=self._timeout) as response:
                if response.status != 200:
                    return
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return
        load = parse_load(text, self._clock())
        if load is None or replica not in self.targets:
            return
        self.loads[replica] = load
        if self._on_scrape is not None:
            self._on_scrape(replica, load)
