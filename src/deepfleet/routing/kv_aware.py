"""KV-aware routing: send a request where its longest prefix is already cached, weighed
against the work each replica has queued, and never onto an overloaded replica.

Inputs (filled in by deepfleet.kvcache.context from the engines' own KV events and metrics):
each endpoint's `matched_blocks` for this request, its prefill backlog (`prefill_blocks`: blocks
it was sent and has not announced yet), its load (running + waiting requests) and its KV cache
usage. With B the request's full blocks, per endpoint, each scorer in [0, 1]:

    prefix  = matched / B                                 cache affinity (saves compute)
    prefill = 1 - work / max(work),  work = backlog + B - matched     time to first token
    load    = 1 - load / busiest_load                     decode batch and queue
    kv      = 1 - kv_usage        (the fullest replica's usage for one sent requests since
                                   its last scrape: its own reading is stale, too low)
    spread  = 1 - held / most_held,  held = cached + backlog     room for a new prefix

    score = prefix_weight * prefix + prefill_weight * prefill + load_weight * load
          + kv_weight * kv + spread_weight * (1 - best prefix) * spread

The spread term counts only as far as no replica holds the prompt: a new prefix goes where it
evicts the least, which keeps the fleet's prefixes evenly spread over its KV caches. It counts
the blocks a replica was sent and is still computing (as SGLang's approximate tree counts what
it routed), so a replica busy with its first prefix does not look empty.

Ties (a fleet where every replica is computing one new prefix) go to the replica chosen first
longest ago: its queued prefill was sent first, so it ends first, and no replica gets a second
new prefix before every other replica had one.

The best score goes first, the rest follow by score (the gateway's retry order). Spill: when
that replica is overloaded, the least loaded replica goes first, so a hot prefix gets copied
to an idle replica instead of melting the one that has it. Overloaded: its load exceeds the
least loaded one's `spill_rel` times and by `spill_queued` requests while its engine queues
requests (`waiting` > 0), or by `spill_abs` requests regardless. Reasons: `prefix` (the first
choice holds part of the prompt), `load` (it holds none), `spill`, `single`.

Config (fleet.yaml):  kv_cache: {routing: {prefix_weight: 3, prefill_weight: 1,
load_weight: 1, kv_weight: 0.5, spread_weight: 1, spill_queued: 4, spill_abs: 32,
spill_rel: 1.5}}  and
models[].routing: kv_aware
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from deepfleet.routing.base import Decision, Endpoint, RouteRequest
from deepfleet.routing.scorers import (
    by_load,
    kv_free_score,
    load_score,
    prefill_score,
    prefix_score,
    spread_score,
)


@dataclass(frozen=True)
class KvAwareWeights:
    prefix_weight: float = 3.0
    prefill_weight: float = 1.0
    load_weight: float = 1.0
    kv_weight: float = 0.5
    spread_weight: float = 1.0
    spill_queued: int = 4
    spill_abs: int = 32
    spill_rel: float = 1.5

    @classmethod
    def of(cls, params: Mapping[str, Any] | None) -> KvAwareWeights:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(params or {}) - set(known))
        if unknown:
            raise ValueError(
                f"kv_aware: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        values: dict[str, Any] = {
            k: int(v) if known[k] == "int" else float(v) for k, v in (params or {}).items()
        }
        out = cls(**values)
        weights = (
            out.prefix_weight,
            out.prefill_weight,
            out.load_weight,
            out.kv_weight,
            out.spread_weight,
        )
        if min(weights) < 0 or out.spill_rel < 1:
            raise ValueError("kv_aware: weights must be >= 0 and spill_rel >= 1")
        return out


class KvAware:
    name = "kv_aware"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.weights = KvAwareWeights.of(params)
        self._turn = 0
        self._chosen: dict[str, int] = {}  # replica -> the turn it was last chosen first

    def decide(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if len(endpoints) < 2:
            return Decision(list(endpoints), "single")
        w = self.weights
        self._turn += 1
        n = len(endpoints)
        # Rotate first so exact ties (an idle fleet, no prefix anywhere) spread evenly.
        ring = [endpoints[(self._turn + i) % n] for i in range(n)]
        prefix = prefix_score(request, ring)
        novelty = w.spread_weight * (1.0 - max(prefix))
        parts = zip(
            prefix,
            prefill_score(request, ring),
            load_score(ring),
            kv_free_score(ring),
            spread_score(ring),
            strict=True,
        )
        scores = [
            w.prefix_weight * p
            + w.prefill_weight * f
            + w.load_weight * q
            + w.kv_weight * k
            + novelty * c
            for p, f, q, k, c in parts
        ]
        chosen = [self._chosen.get(e.replica_id, 0) for e in ring]
        ranked = [ring[i] for i in sorted(range(n), key=lambda i: (-scores[i], chosen[i]))]
        best = ranked[0]
        least = min(e.load for e in ring)
        excess = best.load - least
        if best.load >= w.spill_rel * least and (
            excess >= w.spill_abs or (best.waiting > 0 and excess >= w.spill_queued)
        ):
            order = by_load(ring)
            self._chosen[order[0].replica_id] = self._turn
            return Decision(order, "spill")
        self._chosen[best.replica_id] = self._turn
        return Decision(ranked, "prefix" if best.matched_blocks > 0 else "load")

    def order(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        return self.decide(request, endpoints).order
