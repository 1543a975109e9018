"""Engine load from each replica's Prometheus /metrics, read in the background every
`interval_s`, never on a request's path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from deepfleet.engines.load import VLLM_METRICS, EngineLoad, LoadMetrics, parse_load


class LoadScraper:
    """Keeps `loads` current for the replicas in `targets` (replica id -> base URL), each read
    under its engine's metric names (`metrics`, replica id -> names; vLLM's by default)."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        interval_s: float = 0.5,
        on_scrape: Callable[[str, EngineLoad], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.targets: dict[str, str] = {}
        self.metrics: dict[str, LoadMetrics] = {}
        self.loads: dict[str, EngineLoad] = {}
        self._session = session
        self._on_scrape = on_scrape
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=max(1.0, 2 * interval_s))

    def set_targets(
        self, targets: dict[str, str], metrics: dict[str, LoadMetrics] | None = None
    ) -> None:
        self.targets = dict(targets)
        self.metrics = dict(metrics or {})
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
        load = parse_load(text, self._clock(), self.metrics.get(replica, VLLM_METRICS))
        if load is None or replica not in self.targets:
            return
        self.loads[replica] = load
        if self._on_scrape is not None:
            self._on_scrape(replica, load)
