"""What `deepfleet top` shows: one frame per refresh, from the engines' and the gateway's own
/metrics (no Prometheus needed), with rates and quantiles over a sliding window.

The fetcher is injected, so the arithmetic is tested without sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from deepfleet.fleet.state import FleetState, ReplicaState, ReplicaStatus
from deepfleet.observability import names as n
from deepfleet.observability.samples import (
    Labels,
    Samples,
    bucket_increase,
    increase,
    quantile,
)

Fetch = Callable[[str], Awaitable[str | None]]
"""GET a URL's text; None when it does not answer."""
StateSource = Callable[[], FleetState | None]


@dataclass(frozen=True)
class ReplicaRow:
    replica: str
    model: str
    node: str
    state: str
    restarts: int
    up: bool
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None
    prompt_tps: float | None = None
    output_tps: float | None = None
    ttft_p50: float | None = None
    ttft_p99: float | None = None
    hit_rate: float | None = None


@dataclass(frozen=True)
class ModelRow:
    model: str
    ready: int
    replicas: int
    rps: float | None = None
    error_rps: float | None = None
    prompt_tps: float | None = None
    output_tps: float | None = None
    ttft_p50: float | None = None
    ttft_p99: float | None = None


@dataclass(frozen=True)
class Frame:
    gateway_url: str
    gateway_up: bool
    window_s: float | None
    """Seconds the rates cover; None on the first frame (quantiles then cover all time)."""
    models: list[ModelRow]
    replicas: list[ReplicaRow]


@dataclass(frozen=True)
class _Scrape:
    at: float
    samples: dict[str, Samples | None]  # by URL


def _rate(new: float | None, old: float | None, dt: float | None) -> float | None:
    inc = increase(new, old)
    return inc / dt if inc is not None and dt else None


def _hist(
    new: Samples, old: Samples | None, name: str, match: dict[str, str] | None = None
) -> tuple[float | None, float | None]:
    buckets = new.buckets(name, match)
    if old is not None:
        buckets = bucket_increase(buckets, old.buckets(name, match))
    return quantile(0.5, buckets), quantile(0.99, buckets)


def _parse(text: str | None) -> Samples | None:
    """A scrape's samples; None when the target did not answer or answered something that is
    not the text format."""
    if text is None:
        return None
    try:
        return Samples.parse(text)
    except ValueError:
        return None


def _is_error(labels: Labels) -> bool:
    return labels.get("status", "").startswith("5")


class TopSampler:
    def __init__(
        self,
        state: StateSource,
        fetch: Fetch,
        *,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._fetch = fetch
        self._window = window_s
        self._clock = clock
        self._history: deque[_Scrape] = deque()

    async def frame(self) -> Frame | None:
        """Scrape every target once and compare with the oldest scrape inside the window;
        None when there is no fleet state."""
        state = self._state()
        if state is None:
            return None
        urls = [state.gateway_url] + [r.url for r in state.replicas]
        texts = await asyncio.gather(*(self._fetch(u.rstrip("/") + "/metrics") for u in urls))
        now = self._clock()
        scrape = _Scrape(now, {u: _parse(t) for u, t in zip(urls, texts, strict=True)})
        while len(self._history) > 1 and now - self._history[0].at > self._window:
            self._history.popleft()
        base = self._history[0] if self._history else None
        self._history.append(scrape)
        dt = now - base.at if base is not None else None
        old = base.samples if base is not None else {}
        return Frame(
            gateway_url=state.gateway_url,
            gateway_up=scrape.samples[state.gateway_url] is not None,
            window_s=dt,
            models=_models(state, scrape.samples[state.gateway_url],
                                old.get(state.gateway_url), dt),
            replicas=[_replica(r, scrape.samples[r.url], old.get(r.url), dt)
                      for r in state.replicas],
        )  # fmt: skip


def _models(
    state: FleetState, now: Samples | None, before: Samples | None, dt: float | None
) -> list[ModelRow]:
    rows = []
    for m in state.models:
        mine = [r for r in state.replicas if r.model == m.name]
        ready = sum(r.state is ReplicaState.READY for r in mine)
        if now is None:
            rows.append(ModelRow(m.name, ready, len(mine)))
            continue
        sel = {"model": m.name}
        p50, p99 = _hist(now, before, n.TTFT, sel)
        rows.append(
            ModelRow(
                m.name,
                ready,
                len(mine),
                rps=_model_rate(now, before, n.REQUESTS, sel, dt),
                error_rps=_model_rate(now, before, n.REQUESTS, sel, dt, _is_error),
                prompt_tps=_model_rate(now, before, n.PROMPT_TOKENS, sel, dt),
                output_tps=_model_rate(now, before, n.OUTPUT_TOKENS, sel, dt),
                ttft_p50=p50,
                ttft_p99=p99,
            )
        )
    return rows


def _model_rate(
    now: Samples,
    before: Samples | None,
    name: str,
    sel: dict[str, str],
    dt: float | None,
    where: Callable[[Labels], bool] | None = None,
) -> float | None:
    """Per-second increase of a gateway counter for one model. With `where`, a counter that
    exists but has no matching series yet (no 5xx so far) counts as 0, not unknown."""
    new = now.total(name, sel, where)
    if new is None and where is not None and now.total(name, sel) is not None:
        new = 0.0
    old = before.total(name, sel, where) if before is not None else None
    return _rate(new, old, dt)


def _replica(
    r: ReplicaStatus, now: Samples | None, before: Samples | None, dt: float | None
) -> ReplicaRow:
    row = ReplicaRow(r.replica_id, r.model, r.node, r.state.value, r.restarts, now is not None)
    if now is None:
        return row

    def inc(name: str) -> float | None:
        assert now is not None
        return increase(now.total(name), before.total(name) if before is not None else None)

    queries, hits = inc(n.VLLM_PREFIX_QUERIES), inc(n.VLLM_PREFIX_HITS)
    prompt, output = inc(n.VLLM_PROMPT_TOKENS), inc(n.VLLM_GENERATION_TOKENS)
    p50, p99 = _hist(now, before, n.VLLM_TTFT)
    return replace(
        row,
        running=now.total(n.VLLM_RUNNING),
        waiting=now.total(n.VLLM_WAITING),
        kv_usage=now.total(n.VLLM_KV_USAGE),
        prompt_tps=prompt / dt if prompt is not None and dt else None,
        output_tps=output / dt if output is not None and dt else None,
        ttft_p50=p50,
        ttft_p99=p99,
        hit_rate=hits / queries if hits is not None and queries else None,
    )
