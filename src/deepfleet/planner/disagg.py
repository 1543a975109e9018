"""Prefill/decode disaggregation: when a P/D split beats the aggregated layout, and by how much.

A layout is judged by its goodput: the highest request rate at which the p90 TTFT and the p90
ITL (per request: its mean inter-token time) stay within the workload's targets. Both come
from queueing over the roofline (per replica, `λ` requests/s, classes k of share p_k):

- prefill of n tokens on a replica of D devices is compute bound:
  P(n) = n x (2 x active params + A x n / 2) / (D x peak FLOP/s x PREFILL_MFU), A the attention
  FLOPs per token per context position.
- decode step at batch b: the roofline's step time (deepfleet.planner.roofline) at the mean
  context, divided by DECODE_EFFICIENCY; b = λ x E[out] x ITL (Little's law, solved by
  iteration).
- aggregated: prefill and decode share steps (chunked prefill), so a decode step stretches by
  the prefill share rho = λ x sum p_k P(n_k): ITL = t_dec(b) / (1 - rho). A request decoding
  for T seconds sees the prefills that arrive meanwhile (Poisson): its ITL p90 adds
  1.28 x sqrt(λ T sum p_k P(n_k)^2) / out.
- P/D: decode steps carry no prefill (ITL = t_dec(b)); TTFT adds the KV transfer,
  n x kv_bytes_per_token / link bandwidth (one copy of the cache: for MLA every TP rank holds
  the whole latent, 576 x 61 x 2 = 70,272 bytes per token for R1 in bf16).
- TTFT p90: M/G/1 queue on the replica's prefill work (waits roughly exponential past the
  P(wait > 0) = utilization mass) plus the longest class's service.

P/D splits are searched at node granularity (1 .. nodes - 1 prefill nodes), each pool planned
with `plan()` on its own nodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from deepfleet.catalog.models import ModelFacts
from deepfleet.planner.formats import WeightFormat, kv_dtype_bytes
from deepfleet.planner.kv import kv_bytes_per_token
from deepfleet.planner.layout import ClusterShape, Layout
from deepfleet.planner.memory import Parallelism
from deepfleet.planner.params import count_params
from deepfleet.planner.roofline import Network, decode_estimate

PREFILL_MFU = 0.45
"""Share of peak FLOP/s a prefill reaches (the simulator's GPU_PREFILL_MFU)."""
DECODE_EFFICIENCY = 0.614
"""Share of the decode roofline vLLM 0.26 reached on the H200 (the simulator's GPU_EFFICIENCY)."""
TRANSFER_LATENCY_S = 2e-3
"""Fixed cost of one KV transfer (NIXL handshake, block lookup), beside bytes / bandwidth."""
Z90 = 1.2816


@dataclass(frozen=True)
class RequestClass:
    share: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Workload:
    """A request mix and its latency targets (seconds)."""

    name: str
    classes: tuple[RequestClass, ...]
    ttft_s: float = 2.0
    itl_s: float = 0.05

    @property
    def mean_input(self) -> float:
        return sum(c.share * c.input_tokens for c in self.classes)

    @property
    def mean_output(self) -> float:
        return sum(c.share * c.output_tokens for c in self.classes)


def chat_workload(ttft_s: float = 2.0, itl_s: float = 0.05) -> Workload:
    return Workload("chat", (RequestClass(1.0, 600, 256),), ttft_s, itl_s)


def long_prompt_workload(ttft_s: float = 2.0, itl_s: float = 0.05) -> Workload:
    """8K-token documents (256 out) mixed half and half with short chats."""
    classes = (RequestClass(0.5, 8192, 256), RequestClass(0.5, 600, 256))
    return Workload("long-prompt", classes, ttft_s, itl_s)


def transfer_bytes(model: ModelFacts, input_tokens: int, kv_dtype: str = "auto") -> int:
    """KV bytes one request moves from prefill to decode: one copy of its prompt's cache."""
    return input_tokens * kv_bytes_per_token(model, kv_dtype_bytes(kv_dtype))


class Pool:
    """Step-time model of one pool's replicas (all identical), from the roofline."""

    def __init__(
        self, model: ModelFacts, fmt: WeightFormat, cluster: ClusterShape, layout: Layout
    ) -> None:
        self.layout, self.replicas = layout, layout.dp
        self.devices = layout.devices_per_replica
        self.model, self._fmt, self._cluster = model, fmt, cluster
        self._par = Parallelism(layout.tp, layout.pp, layout.attn_dp, layout.ep)
        self._net = Network(cluster.devices_per_node, cluster.network_bandwidth)
        self._flops_token = 2.0 * count_params(model).active
        self._attn = 4.0 * model.num_layers * model.num_heads * model.head_dim
        self._peak = cluster.device.bf16_flops * self.devices * PREFILL_MFU
        self._steps: dict[tuple[int, int], float] = {}
        self.max_batch = max(1, layout.max_num_seqs * layout.attn_dp)

    def prefill_s(self, tokens: int) -> float:
        return tokens * (self._flops_token + self._attn * tokens / 2) / self._peak

    def decode_step_s(self, batch: float, context: int) -> float:
        key = (max(1, math.ceil(batch)), context)
        if key not in self._steps:
            est = decode_estimate(
                self.model,
                self._fmt,
                self._cluster.device,
                self._par,
                key[0],
                context,
                2,
                self._net,
            )
            self._steps[key] = est.step_s / DECODE_EFFICIENCY
        return self._steps[key]


@dataclass(frozen=True)
class Operating:
    """Latencies of a layout at one request rate (whole cluster, requests/s)."""

    rate: float
    ttft_p90_s: float
    itl_s: float
    itl_p90_s: float
    ok: bool
    why: str


def _ttft(rate: float, services: list[tuple[float, float]]) -> float:
    """p90 time to first token of an M/G/1 queue of (share, service seconds) classes."""
    util = rate * sum(p * s for p, s in services)
    if util >= 0.98:
        return math.inf
    mean_wait = rate * sum(p * s * s for p, s in services) / (2 * (1 - util))
    tail = (mean_wait / util) * math.log(util / 0.1) if util > 0.1 else 0.0
    return max(s for p, s in services if p >= 0.1) + tail


def _decode(pool: Pool, rate: float, work: Workload, stretch: float) -> tuple[float, float]:
    """Mean ITL and decode batch per replica at `rate` requests/s per replica."""
    context = int(work.mean_input + work.mean_output / 2)
    itl = pool.decode_step_s(1, context) / stretch
    batch = 1.0
    for _ in range(40):
        batch = rate * work.mean_output * itl
        itl = 0.5 * itl + 0.5 * pool.decode_step_s(batch, context) / stretch
    return itl, batch


def aggregated_at(pool: Pool, work: Workload, rate: float) -> Operating:
    r = rate / pool.replicas
    pre = [(c.share, pool.prefill_s(c.input_tokens)) for c in work.classes]
    rho = r * sum(p * s for p, s in pre)
    if rho >= 0.95:
        return Operating(rate, math.inf, math.inf, math.inf, False, "prefill saturates")
    itl, batch = _decode(pool, r, work, 1 - rho)
    window = work.mean_output * itl
    spread = Z90 * math.sqrt(r * window * sum(p * s * s for p, s in pre)) / work.mean_output
    chunks = [
        (p, s + math.ceil(c.input_tokens / 8192) * itl)
        for (p, s), c in zip(pre, work.classes, strict=True)
    ]
    ttft = _ttft(r, chunks) + itl
    return _judge(pool, work, rate, ttft, itl, itl + spread, batch)


def pd_at(prefill: Pool, decode: Pool, work: Workload, rate: float, link: float) -> Operating:
    rp, rd = rate / prefill.replicas, rate / decode.replicas
    itl, batch = _decode(decode, rd, work, 1.0)
    m = prefill.model
    services = [
        (
            c.share,
            prefill.prefill_s(c.input_tokens)
            + TRANSFER_LATENCY_S
            + transfer_bytes(m, c.input_tokens) / link,
        )
        for c in work.classes
    ]
    ttft = _ttft(rp, services) + itl
    return _judge(decode, work, rate, ttft, itl, itl, batch)


def _judge(
    pool: Pool, work: Workload, rate: float, ttft: float, itl: float, p90: float, batch: float
) -> Operating:
    why = ""
    if batch > pool.max_batch:
        why = f"decode batch {batch:.0f} > {pool.max_batch} sequences a replica holds"
    elif ttft > work.ttft_s:
        why = f"TTFT p90 {ttft:.2f} s > {work.ttft_s:g} s"
    elif p90 > work.itl_s:
        why = f"ITL p90 {p90 * 1e3:.0f} ms > {work.itl_s * 1e3:.0f} ms"
    return Operating(rate, ttft, itl, p90, not why, why)


def goodput(at: Callable[[float], Operating], hi: float = 1e4) -> Operating:
    """The highest rate `at` still meets the targets (bisection; rate 0 when none does)."""
    lo_op = at(1e-3)
    if not lo_op.ok:
        return replace(lo_op, rate=0.0)
    lo = 1e-3
    for _ in range(50):
        mid = math.sqrt(lo * hi)
        if at(mid).ok:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.005:
            break
    return at(lo)


@dataclass(frozen=True)
class Option:
    """One layout judged on the workload: aggregated (`prefill` None) or a P/D split."""

    kind: str  # "aggregated" or "pd"
    label: str
    decode: Layout
    prefill: Layout | None
    prefill_nodes: int
    decode_nodes: int
    best: Operating
    """At its own goodput."""
    transfer_bytes: int
    """Mean KV bytes per request over the link (0 when aggregated)."""
    transfer_s: float
    prefill_share: float
    """Prefill's share of the device time of the workload (aggregated roofline)."""

    @property
    def goodput(self) -> float:
        return self.best.rate
