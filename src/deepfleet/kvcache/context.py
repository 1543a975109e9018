"""The KV routing context: what one gateway worker knows beyond its endpoint table.

It keeps, per worker: a KV index fed by every engine's KV events (subscriber.py), each
engine's load from its /metrics (load.py), and each model's tokenizer (tokenize.py). Policies
stay pure: the context turns a request into token-block hashes and the endpoints into
snapshots that carry load and matched prefix blocks; the policy only orders them.

The gateway's calls (one context per worker):

    kv = RoutingContext(state_path, registry=metrics.registry, relay=os.environ.get(RELAY_ENV))
    await kv.start()                                  # in the app's lifespan; kv.stop() at exit
    policy = kv.policy(model, entry.routing)          # instead of build_policy(); cache per model
    route = await kv.prepare(model, path, body)       # before forwarding; never raises
    route = kv.prepare_now(model, body)               # the same without an await, or None
    order = policy.order(route, endpoints)            # the proxy's call, now given `route`

`policy.order` snapshots the endpoints itself (`kv.snapshot(endpoints, route)` is public for
callers that order differently) and records the decision's reason. The context follows the
fleet state file on its own: replicas that appear, go, or restart (their index entries are
dropped; their events socket stays bound, and the new engine connects to it again).
Settings come from `kv_routing.json` beside the state file (fleet.yaml `kv_cache.routing`,
written by the controller), else the defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import msgspec
import zmq.asyncio
from prometheus_client import CollectorRegistry, Counter

from deepfleet.config.kvcache import KV_ROUTING_FILE, KvRoutingSpec
from deepfleet.engines.load import EngineLoad
from deepfleet.fleet.state import FleetState, ModelRoute, read_state
from deepfleet.kvcache.events import EventStreams
from deepfleet.kvcache.hashing import block_hashes, prefix_key
from deepfleet.kvcache.index import KvIndex
from deepfleet.kvcache.load import LoadScraper
from deepfleet.kvcache.metrics import RoutingMetrics
from deepfleet.kvcache.subscriber import EventSubscriber, Publisher, Resyncer
from deepfleet.kvcache.tokenize import ModelTokenizer, Prompt, decode_chat, decode_completion
from deepfleet.routing import (
    NEEDS_TOKENS,
    Decision,
    Endpoint,
    ExplainingPolicy,
    RouteRequest,
    RoutingPolicy,
    build_policy,
)

log = logging.getLogger(__name__)
__all__ = ["KV_ROUTING_FILE", "RELAY_ENV", "RoutingContext", "load_spec"]
RELAY_ENV = "DEEPFLEET_KV_RELAY"
NEEDS_EVENTS = frozenset({"kv_aware"})
DEFAULT_BLOCK_SIZE = 16
REFRESH_S = 0.5
NO_LOAD = EngineLoad()  # an engine not scraped yet


def load_spec(state_path: Path) -> KvRoutingSpec:
    path = state_path.parent / KV_ROUTING_FILE
    try:
        return KvRoutingSpec.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return KvRoutingSpec()


class RoutingContext:
    def __init__(
        self,
        state_path: Path,
        spec: KvRoutingSpec | None = None,
        *,
        registry: CollectorRegistry | None = None,
        relay: str | None = None,
        bind_host: str = "127.0.0.1",
    ) -> None:
        self.state_path = state_path
        self.spec = spec or load_spec(state_path)
        self.metrics = RoutingMetrics(registry)
        self.index = KvIndex(self.spec.index_max_blocks)
        self.streams = EventStreams(self.index, on_lag=self.metrics.event_lag.observe)
        self._relay = relay
        self._bind_host = bind_host
        self._models: dict[str, ModelRoute] = {}
        self._replica_model: dict[str, str] = {}
        self._restarts: dict[str, int] = {}
        self._routed: defaultdict[str, int] = defaultdict(int)
        self._decided: dict[tuple[str, str, str], Counter] = {}
        self._tokenizers: dict[str, asyncio.Future[ModelTokenizer | None]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kv-tokenize")
        self._session: aiohttp.ClientSession | None = None
        self._zmq: zmq.asyncio.Context | None = None
        self._subscriber: EventSubscriber | None = None
        self.scraper = LoadScraper(self._http, self.spec.scrape_interval_s, self._scraped)
        self._tasks: list[asyncio.Task[None]] = []
        self._mtime_ns = -1

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._zmq = zmq.asyncio.Context()
        resyncer = Resyncer(self.streams, self._http, self._zmq, self._resynced)
        self._subscriber = EventSubscriber(self.streams, resyncer, self._zmq, relay=self._relay)
        await self._subscriber.start()
        self.refresh()
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
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=5)
            )
        return self._session

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            self.refresh()
            if self._subscriber is not None:
                self._subscriber.retry()
            self.metrics.index_blocks.set(len(self.index))
            self.metrics.index_entries.set(self.index.entries)

    def refresh(self) -> bool:
        """Re-read the fleet state if it changed; True if it did."""
        try:
            mtime = os.stat(self.state_path).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._mtime_ns:
            return False
        state = read_state(self.state_path)
        if state is None:
            return False
        self._mtime_ns = mtime
        self.load(state)
        return True

    def load(self, state: FleetState) -> None:
        self._models = {m.name: m for m in state.models}
        self._replica_model = {r.replica_id: r.model for r in state.replicas}
        for r in state.replicas:
            known = self._restarts.get(r.replica_id)
            if known is not None and known != r.restarts:
                self.streams.restarted(r.replica_id)
                self._routed.pop(r.replica_id, None)
            self._restarts[r.replica_id] = r.restarts
        evented = {m.name for m in state.models if m.routing in NEEDS_EVENTS}
        publishers = [
            Publisher(r.replica_id, f"tcp://{self._bind_host}:{r.kv_events_port}", r.url)
            for r in state.replicas
            if r.model in evented and r.kv_events_port is not None
        ]
        if self._subscriber is not None:
            self._subscriber.set_publishers(publishers)
        self.scraper.set_targets({r.replica_id: r.url for r in state.replicas})
        for m in state.models:
            if m.routing in NEEDS_TOKENS and m.tokenizer and m.tokenizer not in self._tokenizers:
                self._tokenizers[m.tokenizer] = asyncio.ensure_future(
                    self._load_tokenizer(m.tokenizer)
                )

    async def _load_tokenizer(self, folder: str) -> ModelTokenizer | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor,
                lambda: ModelTokenizer(Path(folder), self.spec.conversation_cache_tokens),
            )
        except Exception:
            log.exception("cannot load the tokenizer in %s; routing without tokens", folder)
            return None

    # -- per request -------------------------------------------------------------------------
    def block_size(self, model: str) -> int:
        """The engines' block size as their events report it, else the fleet state's."""
        for replica, owner in self._replica_model.items():
            if owner == model and (size := self.index.block_size(replica)):
                return size
        route = self._models.get(model)
        return (route.block_size if route else None) or DEFAULT_BLOCK_SIZE

    def prepare_now(self, model: str, body: bytes) -> RouteRequest | None:
        """`prepare`'s answer without an await when the model's policy needs no tokens, else
        None (then await `prepare`)."""
        route = self._models.get(model)
        if route is None or route.routing not in NEEDS_TOKENS:
            return RouteRequest(model, body)
        return None

    async def prepare(self, model: str, path: str, body: bytes) -> RouteRequest:
        """The request as policies see it: block hashes and a prefix key when the model's
        policy uses them. Never raises: anything odd routes without tokens."""
        route = self._models.get(model)
        if route is None or route.routing not in NEEDS_TOKENS:
            return RouteRequest(model, body)
        started = time.perf_counter()
        try:
            future = self._tokenizers.get(route.tokenizer or "")
            tokenizer = await future if future is not None else None
            if tokenizer is None:
                return RouteRequest(model, body, prefix_key=_text_key(path, body))
            size = self.block_size(model)
            if len(body) > self.spec.tokenize_inline_bytes:
                loop = asyncio.get_running_loop()
                out = await loop.run_in_executor(
                    self._executor, _tokenize, tokenizer, path, body, size, self.spec
                )
            else:
                out = _tokenize(tokenizer, path, body, size, self.spec)
        except Exception:
            log.debug("routing %s without tokens", model, exc_info=True)
            return RouteRequest(model, body)
        self.metrics.prepare.labels(model).observe(time.perf_counter() - started)
        if out is None:
            return RouteRequest(model, body, prefix_key=_text_key(path, body))
        prompt, hashes, key = out
        return RouteRequest(model, body, tuple(hashes), len(prompt.tokens), key)

    def snapshot(self, endpoints: Sequence[Endpoint], request: RouteRequest) -> list[Endpoint]:
        """Endpoints with the engines' load and, for this request, their matched blocks."""
        hashes = request.block_hashes
        now = time.monotonic()
        index = self.index
        matched = index.match(hashes, now) if hashes else {}
        loads = self.scraper.loads
        routed = self._routed
        out = []
        for e in endpoints:
            rid = e.replica_id
            load = loads.get(rid) or NO_LOAD
            out.append(
                Endpoint(
                    rid,
                    e.model,
                    e.url,
                    in_flight=e.in_flight,
                    running=load.running,
                    waiting=load.waiting,
                    kv_usage=load.kv_usage,
                    routed=routed.get(rid, 0),
                    matched_blocks=matched.get(rid, 0),
                    prefill_blocks=index.backlog(rid, now),
                    cached_blocks=index.blocks_of(rid),
                )
            )
        return out

    def policy(self, model: str, name: str) -> RoutingPolicy:
        """Policy `name` with this fleet's parameters, observed by the context."""
        return _Observed(self, model, build_policy(name, self.spec.policy_params(name)))

    def record(self, model: str, policy: str, request: RouteRequest, decision: Decision) -> None:
        if not decision.order:
            return
        first = decision.order[0]
        self._routed[first.replica_id] += 1
        if policy in NEEDS_EVENTS and request.block_hashes:
            until = time.monotonic() + self.spec.pending_ttl_s
            self.index.assume(first.replica_id, request.block_hashes, until, at=time.time())
        labels = (model, policy, decision.reason)
        decided = self._decided.get(labels)
        if decided is None:  # labels() validates and locks on every call: look up once
            decided = self._decided[labels] = self.metrics.decisions.labels(*labels)
        decided.inc()
        if request.block_hashes:
            m = self.metrics
            m.routed_blocks.labels(model).inc(len(request.block_hashes))
            m.matched_blocks.labels(model).inc(first.matched_blocks)

    # -- callbacks ---------------------------------------------------------------------------
    def _scraped(self, replica: str, load: EngineLoad) -> None:
        self._routed.pop(replica, None)  # the engine's counts now include them
        model = self._replica_model.get(replica, "")
        if load.prefix_queries > 0:
            self.metrics.hit_rate.labels(model, replica).set(load.prefix_hits / load.prefix_queries)
        mine = [
            self.scraper.loads[r]
            for r, owner in self._replica_model.items()
            if owner == model and r in self.scraper.loads
        ]
        queries = sum(x.prefix_queries for x in mine)
        if queries > 0:
            self.metrics.fleet_hit_rate.labels(model).set(
                sum(x.prefix_hits for x in mine) / queries
            )

    def _resynced(self, replica: str, how: str) -> None:
        self.metrics.resyncs.labels(replica, how).inc()


class _Observed:
    """A policy seen through the context: it orders snapshots and its decisions are counted."""

    def __init__(self, context: RoutingContext, model: str, inner: RoutingPolicy) -> None:
        self.name = inner.name
        self.inner = inner
        self._context = context
        self._model = model
        # Checked once: isinstance against a runtime Protocol costs ~11 us per request.
        self._explains: ExplainingPolicy | None = (
            inner if isinstance(inner, ExplainingPolicy) else None
        )

    def order(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        snapshot = self._context.snapshot(endpoints, request)
        if self._explains is not None:
            decision = self._explains.decide(request, snapshot)
        else:
            decision = Decision(self.inner.order(request, snapshot), "order")
        self._context.record(self._model, self.name, request, decision)
        return decision.order


def _tokenize(
    tokenizer: ModelTokenizer, path: str, body: bytes, block_size: int, spec: KvRoutingSpec
) -> tuple[Prompt, list[int], int] | None:
    if path.endswith("/chat/completions"):
        prompt = tokenizer.chat(decode_chat(body))
    else:
        found = tokenizer.completion(decode_completion(body))
        if found is None:
            return None
        prompt = found
    return (
        prompt,
        block_hashes(prompt.tokens, block_size),
        prefix_key(prompt.tokens, spec.prefix_tokens),
    )


class _Texts(msgspec.Struct):
    messages: list[dict[str, object]] | None = None
    prompt: object = None


def _text_key(path: str, body: bytes, chars: int = 1024) -> int | None:
    """Without a tokenizer: a key from the prompt's first characters (stable across workers)."""
    with contextlib.suppress(msgspec.DecodeError):
        texts = msgspec.json.decode(body, type=_Texts)
        if texts.messages:
            text = "".join(str(m.get("content", "")) for m in texts.messages)
        else:
            text = str(texts.prompt or "")
        digest = hashlib.blake2b(text[:chars].encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")
    return None
