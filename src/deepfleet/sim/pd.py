"""A simulated fleet on virtual time, aggregated or prefill/decode disaggregated (a simulator:
no engine runs, every time comes from the planner's roofline).

Each engine is a step loop: FCFS waiting queue, admission while its KV cache (tokens, from the
planner's layout) has room for the prompt plus the output, and steps that run every admitted
decode plus up to `chunk` prompt tokens (chunked prefill). A step lasts the roofline decode time
at its batch and mean context plus the prefill time of its prompt tokens
(deepfleet.planner.disagg.Pool). Aggregated engines do both phases. In P/D, prefill engines
only prefill; a finished prompt's KV (kv bytes per token x prompt tokens) then crosses the
link of its prefill replica (FIFO at the link bandwidth), and the decode engine with the
fewest sequences admits it; the first token is the decode engine's first step for it.
Requests arrive as a Poisson process; everything is deterministic for a seed.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

from deepfleet.bench.stats import Distribution
from deepfleet.planner.disagg import TRANSFER_LATENCY_S, Pool, Workload

CHUNK_TOKENS = 8192
"""Prompt tokens one step takes (vLLM's max_num_batched_tokens on >= 70 GiB GPUs)."""


@dataclass
class SimRequest:
    arrival: float
    input_tokens: int
    output_tokens: int
    prefilled: int = 0
    generated: int = 0
    first_token: float | None = None
    done: float | None = None

    @property
    def itl(self) -> float:
        """Mean inter-token time after the first token."""
        if self.done is None or self.first_token is None or self.output_tokens < 2:
            return 0.0
        return (self.done - self.first_token) / (self.output_tokens - 1)


@dataclass
class _Engine:
    pool: Pool
    kv_tokens: int
    prefill_only: bool
    waiting: list[SimRequest] = field(default_factory=list)
    running: list[SimRequest] = field(default_factory=list)
    used: int = 0
    busy: bool = False

    def admit(self) -> None:
        while self.waiting:
            r = self.waiting[0]
            need = r.input_tokens + (0 if self.prefill_only else r.output_tokens)
            cap = self.pool.max_batch
            if self.running and (self.used + need > self.kv_tokens or len(self.running) >= cap):
                return
            self.waiting.pop(0)
            self.running.append(r)
            self.used += need

    def plan_step(self) -> tuple[float, list[SimRequest], list[SimRequest]]:
        """Step time, sequences whose prefill ends, sequences that decode this step."""
        budget, ends, decodes, prompt = CHUNK_TOKENS, [], [], 0
        context = 0
        for r in self.running:
            if r.prefilled < r.input_tokens:
                take = min(budget, r.input_tokens - r.prefilled)
                if take <= 0:
                    continue
                budget -= take
                prompt += take
                r.prefilled += take
                if r.prefilled == r.input_tokens:
                    ends.append(r)
            else:
                decodes.append(r)
                context += r.input_tokens + r.generated
        t = self.pool.prefill_s(prompt) if prompt else 0.0
        if decodes:
            t += self.pool.decode_step_s(len(decodes), context // len(decodes))
        return t, ends, decodes


@dataclass(frozen=True)
class _Step:
    engine: _Engine
    ends: list[SimRequest]
    decodes: list[SimRequest]


@dataclass(frozen=True)
class SimResult:
    label: str
    rate: float
    requests: int
    goodput: float
    """Requests per second that met both targets (over the arrival window)."""
    met: float
    ttft: Distribution
    itl: Distribution


def simulate(
    work: Workload,
    rate: float,
    decode: Pool,
    prefill: Pool | None = None,
    *,
    link_bandwidth: float = 25e9,
    kv_bytes_per_token: int = 0,
    duration_s: float = 60.0,
    warmup_s: float = 0.0,
    seed: int = 0,
    label: str = "",
) -> SimResult:
    """Run `duration_s` of Poisson arrivals at `rate` req/s to completion, on virtual time.

    Only requests arriving after `warmup_s` are counted: a 256-token answer decodes for
    about 10 s, so the fleet reaches its steady batch only after that long.
    """
    rng = random.Random(seed)
    reqs: list[SimRequest] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            break
        c = rng.choices(work.classes, weights=[c.share for c in work.classes])[0]
        reqs.append(SimRequest(t, c.input_tokens, c.output_tokens))
    dec = [_Engine(decode, decode.layout.kv_tokens, False) for _ in range(decode.replicas)]
    pre = (
        [_Engine(prefill, prefill.layout.kv_tokens, True) for _ in range(prefill.replicas)]
        if prefill
        else []
    )
    links = [0.0] * len(pre)
    seq = itertools.count()
    events: list[tuple[float, int, str, SimRequest | _Step]] = [
        (r.arrival, next(seq), "arrive", r) for r in reqs
    ]
    heapq.heapify(events)

    def kick(e: _Engine, now: float) -> None:
        if e.busy:
            return
        e.admit()
        if not e.running:
            return
        dt, ends, decodes = e.plan_step()
        e.busy = True
        heapq.heappush(events, (now + dt, next(seq), "step", _Step(e, ends, decodes)))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            assert isinstance(payload, SimRequest)
            group = pre or dec
            target = min(group, key=lambda e: len(e.waiting) + len(e.running))
            target.waiting.append(payload)
            kick(target, now)
        elif kind == "transfer":
            assert isinstance(payload, SimRequest)
            d = min(dec, key=lambda e: len(e.waiting) + len(e.running))
            d.waiting.append(payload)
            kick(d, now)
        else:
            assert isinstance(payload, _Step)
            e, ends, decodes = payload.engine, payload.ends, payload.decodes
            e.busy = False
            for r in decodes:
                r.generated += 1
                if r.first_token is None:
                    r.first_token = now
                if r.generated >= r.output_tokens:
                    r.done = now
                    e.running.remove(r)
                    e.used -= r.input_tokens + r.output_tokens
            if e.prefill_only:
                i = pre.index(e)
                for r in ends:
                    e.running.remove(r)
                    e.used -= r.input_tokens
                    start = max(now, links[i])
                    links[i] = start + r.input_tokens * kv_bytes_per_token / link_bandwidth
                    heapq.heappush(
                        events, (links[i] + TRANSFER_LATENCY_S, next(seq), "transfer", r)
                    )
            kick(e, now)
    counted = [r for r in reqs if r.arrival >= warmup_s]
    return _result(work, rate, counted, duration_s - warmup_s, label)


def _result(
    work: Workload, rate: float, reqs: list[SimRequest], duration: float, label: str
) -> SimResult:
    ttfts = [r.first_token - r.arrival for r in reqs if r.first_token is not None]
    itls = [r.itl for r in reqs if r.done is not None]
    met = sum(
        1
        for r in reqs
        if r.first_token is not None
        and r.first_token - r.arrival <= work.ttft_s
        and r.itl <= work.itl_s
    )
    return SimResult(
        label=label,
        rate=rate,
        requests=len(reqs),
        goodput=met / duration,
        met=met / max(1, len(reqs)),
        ttft=Distribution.of(ttfts),
        itl=Distribution.of(itls),
    )
