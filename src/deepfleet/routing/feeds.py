"""What keeps one gateway worker's Router current: the fleet state (through the endpoint
table's follower), every engine's KV events into the index (deepfleet.kvcache.subscriber),
every engine's load from its /metrics (scraper.py), and each model's tokenizer
(deepfleet.kvcache.prompts). Settings come from fleet.yaml's `kv_cache.routing` section as
plain data (config.kvcache.read_routing_spec reads what the controller wrote).

    feeds = RoutingFeeds(table, routing_section, registry=registry, relay=worker.relay)
    router = feeds.router                    # the per-request calls: router.py
    await feeds.start()                      # in the app's lifespan; feeds.stop() at exit

Replicas that appear, go, or restart are followed (a restarted replica's index entries are
dropped; its events socket stays open, and zmq reconnects to the new engine's Unix socket, or
the new engine connects to the bound TCP port again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import zmq.asyncio
from prometheus_client import CollectorRegistry

from deepfleet.engines.load import EngineLoad, LoadMetrics
from deepfleet.engines.registry import get_adapter, known_engines
from deepfleet.fleet.state import FleetState
from deepfleet.kvcache.endpoints import replica_events_endpoint
from deepfleet.kvcache.events import EventStreams
from deepfleet.kvcache.index import KvIndex
from deepfleet.kvcache.prompts import PromptHasher
from deepfleet.kvcache.subscriber import EventSubscriber, Publisher, Resyncer
from deepfleet.routing.base import Need
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.metrics import RoutingMetrics
from deepfleet.routing.registry import needs_of
from deepfleet.routing.router import Router
from deepfleet.routing.scraper import LoadScraper

REFRESH_S = 0.5


class RoutingFeeds:
    def __init__(
        self,
        table: EndpointTable,
        settings: Mapping[str, Any],
        *,
        registry: CollectorRegistry | None = None,
        relay: str | None = None,
        bind_host: str = "127.0.0.1",
    ) -> None:
        """`settings`: the whole `kv_cache.routing` section (KvRoutingSpec.model_dump())."""
        self.table = table
        self.metrics = RoutingMetrics(registry)
        self.index = KvIndex(int(settings["index_max_blocks"]))
        self.streams = EventStreams(
            self.index,
            on_lag=self.metrics.event_lag.observe,
            on_invalid=lambda replica, n: self.metrics.invalid_events.labels(replica).inc(n),
        )
        self.prompts = PromptHasher(
            prefix_tokens=int(settings["prefix_tokens"]),
            inline_bytes=int(settings["tokenize_inline_bytes"]),
            conversation_cache_tokens=int(settings["conversation_cache_tokens"]),
            on_tokenized=lambda model, s: self.metrics.prepare.labels(model).observe(s),
        )
        self.scraper = LoadScraper(self._http, float(settings["scrape_interval_s"]), self._scraped)
        self.router = Router(
            table, self.index, self.scraper.loads, self.prompts, self.metrics, settings
        )
        self._relay = relay
        self._bind_host = bind_host
        self._replica_model: dict[str, str] = {}
        self._restarts: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._zmq: zmq.asyncio.Context | None = None
        self._subscriber: EventSubscriber | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        table.follower.listen(self.load)
        if table.follower.state is not None:
            self.load(table.follower.state)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._zmq = zmq.asyncio.Context()
        resyncer = Resyncer(self.streams, self._http, self._zmq, self._resynced, relay=self._relay)
        self._subscriber = EventSubscriber(self.streams, resyncer, self._zmq, relay=self._relay)
        await self._subscriber.start()
        self._started = True
        if not self.table.refresh() and self.table.follower.state is not None:
            self.load(self.table.follower.state)  # read before the subscriber existed
        self._tasks = [
            asyncio.create_task(self.scraper.run(), name="kv-load-scraper"),
            asyncio.create_task(self._follow(), name="kv-state-follower"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._subscriber is not None:
            await self._subscriber.stop()
        if self._session is not None:
            await self._session.close()
        if self._zmq is not None:
            self._zmq.destroy(linger=0)
        self.prompts.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=5)
            )
        return self._session

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            self.table.refresh()
            if self._subscriber is not None:
                self._subscriber.retry()
            self.metrics.index_blocks.set(len(self.index))
            self.metrics.index_entries.set(self.index.entries)

    def load(self, state: FleetState) -> None:
        self.router.load(state)
        self._replica_model = {r.replica_id: r.model for r in state.replicas}
        for r in state.replicas:
            known = self._restarts.get(r.replica_id)
            if known is not None and known != r.restarts:
                self.streams.restarted(r.replica_id)
                self.router.restarted(r.replica_id)
            self._restarts[r.replica_id] = r.restarts
        evented = {m.name for m in state.models if Need.EVENTS in needs_of(m.routing)}
        publishers = [
            Publisher(
                r.replica_id,
                replica_events_endpoint(r.kv_events_endpoint, r.kv_events_port, self._bind_host),
                r.url,
                r.kv_events_bound,
            )
            for r in state.replicas
            if r.model in evented and r.kv_events_port is not None
        ]
        if self._subscriber is not None:
            self._subscriber.set_publishers(publishers)
        self.scraper.set_targets(
            {r.replica_id: r.url for r in state.replicas},
            {r.replica_id: m for r in state.replicas if (m := load_metrics(r.engine)) is not None},
        )
        if self._started:  # tokenizers load inside the event loop
            self.prompts.set_models(
                {
                    m.name: m.tokenizer
                    for m in state.models
                    if Need.TOKENS in needs_of(m.routing) and m.tokenizer
                }
            )

    # -- callbacks ---------------------------------------------------------------------------
    def _scraped(self, replica: str, load: EngineLoad) -> None:
        self.router.scraped(replica)
        model = self._replica_model.get(replica, "")
        if load.prefix_queries > 0:
            self.metrics.hit_rate.labels(model, replica).set(load.prefix_hits / load.prefix_queries)
        loads = self.scraper.loads
        mine = [
            loads[r] for r, owner in self._replica_model.items() if owner == model and r in loads
        ]
        queries = sum(x.prefix_queries for x in mine)
        if queries > 0:
            self.metrics.fleet_hit_rate.labels(model).set(
                sum(x.prefix_hits for x in mine) / queries
            )

    def _resynced(self, replica: str, how: str) -> None:
        self.metrics.resyncs.labels(replica, how).inc()


def load_metrics(engine: str) -> LoadMetrics | None:
    """The metric names engine `engine` reports its load under; None for one deepfleet has
    no adapter for (a test double: read with vLLM's names)."""
    return get_adapter(engine).load_metrics if engine in known_engines() else None
