"""Prefill/decode disaggregation in the gateway: one client request, two engine requests.

A disaggregated model's replicas carry a role (`prefill` or `decode`, fleet state). For such
a model the gateway:

1. prefill: sends the request, made non-streamed with `max_tokens: 1` and
   `kv_transfer_params: {"do_remote_decode": true, ...}`, to a prefill engine, the one holding
   the longest cached prefix of the prompt (KV events; the model needs a KV-aware routing
   policy for the gateway to tokenize) and then the least loaded. The engine computes the
   prompt, keeps its KV blocks and answers with `kv_transfer_params` naming them (NIXL:
   remote_engine_id, remote_block_ids, remote_host/port). A prefill engine that cannot be
   reached, times out or answers 5xx is ejected and the next one tried, as the proxy does.
2. decode: sends the client's own request, plus those `kv_transfer_params`, to the least
   loaded decode engine (fewest requests, then least KV in use) through the proxy, so
   retries before the first byte, the relay and mid-stream migration apply unchanged. The
   decode engine pulls the blocks and streams the answer: the client sees one ordinary
   OpenAI stream (or JSON answer), the decode engine's bytes.

When no prefill engine answers, or one answers 4xx, the decode engines get the request as is
and compute the prompt themselves (they run vLLM's full server; the 4xx comes back from the
decode engine in the same words). Connectors that find the KV by the prompt itself
(shared-storage, LMCache) need no handle; an answer without `kv_transfer_params` decodes
without one.

Metrics: `deepfleet_pd_prefill_seconds` (gateway receive to the prefill answer) and
`deepfleet_pd_handoff_seconds` (prefill answer to the decode engine's first bytes: KV transfer
plus the first decode step) split the TTFT that `deepfleet_time_to_first_token_seconds`
reports whole; `deepfleet_pd_fallbacks_total{reason}` counts requests decoded without a
prefill.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.responses import Response

from deepfleet.gateway.metrics import LATENCY_BUCKETS
from deepfleet.gateway.proxy import Forward, Outcome, Proxy
from deepfleet.gateway.relay import StreamRelay
from deepfleet.gateway.upstream import UpstreamError
from deepfleet.routing.base import Endpoint, RouteRequest

PREFILL, DECODE = "prefill", "decode"
PREFILL_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
"""What vLLM's connectors read on a prefill request (the NixlConnector's full set)."""

Done = Callable[[Outcome], None]


def prefill_order(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """Longest cached prefix first, then the least loaded, then the shortest prefill backlog."""
    return sorted(endpoints, key=lambda e: (-e.matched_blocks, e.load, e.prefill_blocks))


def decode_order(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """Fewest requests first, then the least KV cache in use."""
    return sorted(endpoints, key=lambda e: (e.load, e.kv_usage))


def prefill_body(body: dict[str, Any]) -> bytes:
    """The prefill request: one token, not streamed, asking the engine to keep the KV."""
    out = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    out["max_tokens"] = 1
    if "max_completion_tokens" in out:
        out["max_completion_tokens"] = 1
    out["n"] = 1
    out["kv_transfer_params"] = PREFILL_PARAMS
    return json.dumps(out, separators=(",", ":")).encode()


def decode_body(body: dict[str, Any], params: dict[str, Any] | None) -> bytes:
    """The client's request, plus the prefill engine's transfer handle when it gave one."""
    if params is None:
        return json.dumps(body, separators=(",", ":")).encode()
    return json.dumps({**body, "kv_transfer_params": params}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Prefilled:
    """The prefill phase's result: the handle (None: decode computes the prompt itself)."""

    params: dict[str, Any] | None
    replica: str | None
    fallback: str | None
    """Why the decode engines compute the prompt (a metric label), None after a prefill."""


class PdMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.prefill = Histogram(
            "deepfleet_pd_prefill_seconds",
            "P/D: gateway receive to the prefill engine's answer (queue + prompt compute)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.handoff = Histogram(
            "deepfleet_pd_handoff_seconds",
            "P/D: prefill answer to the decode engine's first bytes (KV transfer + first step)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.fallbacks = Counter(
            "deepfleet_pd_fallbacks",
            "P/D requests the decode engines computed without a prefill, by reason",
            ["model", "reason"],
            registry=registry,
        )


class PdPath:
    """The two phases of a disaggregated model's request; the decode phase is the proxy's."""

    def __init__(self, proxy: Proxy, clock: Callable[[], float] = time.perf_counter) -> None:
        self.proxy = proxy
        self.metrics = PdMetrics(proxy.metrics.registry)
        self.clock = clock

    async def forward(
        self,
        req: Forward,
        route: RouteRequest,
        snapshot: Callable[[Sequence[Endpoint], RouteRequest], list[Endpoint]],
        endpoints: Sequence[Endpoint],
        done: Done,
    ) -> Response | StreamRelay:
        """The decode engine's answer to `req`, after a prefill when one answers.
        `endpoints`: the model's ready replicas, every one with a role."""
        prefill = [e for e in endpoints if e.role == PREFILL]
        decode = [e for e in endpoints if e.role != PREFILL]
        body = json.loads(req.body)
        if not decode:  # prefill engines are full servers too: serve rather than fail
            decode, prefill = prefill, []
        got = await self.prefill(req, body, prefill_order(snapshot(prefill, route)))
        ended = self.clock()
        later, m = self.proxy.later, self.metrics
        if got.fallback is None:
            later.add(m.prefill.labels(req.model).observe, ended - req.started)
        else:
            later.add(m.fallbacks.labels(req.model, got.fallback).inc)
        order = decode_order(snapshot(decode, route))
        answer = await self.proxy.forward(
            replace(req, body=decode_body(body, got.params)), order, done
        )
        served = isinstance(answer, StreamRelay) or answer.status_code == 200
        if got.fallback is None and served:
            later.add(m.handoff.labels(req.model).observe, self.clock() - ended)
        return answer

    async def prefill(self, req: Forward, body: dict[str, Any], order: list[Endpoint]) -> Prefilled:
        """The first prefill engine in `order` that answers: its transfer handle."""
        if not order:
            return Prefilled(None, None, "no_prefill_replica")
        data = prefill_body(body)
        table = self.proxy.table
        tried: set[str] = set()
        try:
            for ep in order:
                tried.add(ep.replica_id)
                got = await self._ask(ep, req.path, data)
                if got is None or got[0] >= 500:
                    self._eject(ep.replica_id)
                    continue
                status, answer = got
                if status != 200:
                    return Prefilled(None, ep.replica_id, f"prefill_http_{status}")
                table.succeeded(ep.replica_id)
                return _handle(answer, ep.replica_id)
        finally:
            for ep in order:
                if ep.replica_id not in tried:
                    table.release_probe(ep.replica_id)
        return Prefilled(None, None, "prefill_failed")

    async def _ask(self, ep: Endpoint, path: str, data: bytes) -> tuple[int, bytes] | None:
        """One prefill engine's status and answer; None when it cannot be reached or fails
        while answering. Counted in the engine's in-flight requests meanwhile, so requests
        that arrive before the next metrics scrape spread over the prefill engines."""
        in_flight = self.proxy.table.in_flight
        in_flight[ep.replica_id] += 1
        try:
            upstream = await self.proxy.upstream.post(ep.url, path, data)
            try:
                return upstream.status, await upstream.read_all()
            finally:
                upstream.close()  # a client gone meanwhile: vLLM aborts the prefill
        except (UpstreamError, TimeoutError):
            return None
        finally:
            in_flight[ep.replica_id] -= 1

    def _eject(self, replica_id: str) -> None:
        self.proxy.table.eject(replica_id)
        self.proxy.metrics.ejections.labels(replica_id).inc()


def _handle(answer: bytes, replica: str) -> Prefilled:
    try:
        params = json.loads(answer).get("kv_transfer_params")
    except (ValueError, AttributeError):
        return Prefilled(None, replica, "prefill_bad_answer")
    return Prefilled(params if isinstance(params, dict) else None, replica, None)
