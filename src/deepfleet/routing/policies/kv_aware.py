"""KV-aware routing: send a request where its longest prefix is already cached, weighed
against the work each replica has queued, and never onto an overloaded replica.

The llm-d scheduler's shape: a profile of scorers (scorers/, each endpoint -> [0, 1]) adds up
to one score per endpoint; the spill picker (spill.py) takes the best unless it is
overloaded. With the default profile, per endpoint:

    score = 3 * prefix + 1 * prefill + 1 * load + 0.5 * kv_free
          + 1 * (1 - best prefix) * spread

Inputs (filled in by the Router from the engines' own KV events and metrics): each
endpoint's `matched_blocks` for this request, its prefill backlog (`prefill_blocks`: blocks it
was sent and has not announced yet), its load (running + waiting requests) and its KV cache
usage.

Ties (a fleet where every replica is computing one new prefix) go to the replica chosen first
longest ago: its queued prefill was sent first, so it ends first, and no replica gets a second
new prefix before every other replica had one. Before scoring, the endpoints are rotated by
one per request, so exact ties in an idle fleet spread evenly.

Config (fleet.yaml):

    kv_cache:
      routing:
        scorers: {prefix: 3, prefill: 1, load: 1, kv_free: 0.5, spread: 1}
        spill_queued: 4
        spill_abs: 32
        spill_rel: 1.5
    models: [{name: ..., routing: kv_aware}]

`scorers` is the whole profile: a scorer left out does not count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deepfleet.config.routing import DEFAULT_SCORERS
from deepfleet.routing.base import Decision, Endpoint, Need, RouteRequest, RoutingPolicy
from deepfleet.routing.policies.spill import SETTINGS as SPILL_SETTINGS
from deepfleet.routing.policies.spill import Spill
from deepfleet.routing.scorers.profile import Profile


class KvAware(RoutingPolicy):
    name = "kv_aware"
    needs = frozenset({Need.TOKENS, Need.EVENTS})
    settings = ("scorers", *SPILL_SETTINGS)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.settings))
        if unknown:
            raise ValueError(
                f"kv_aware: unknown parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(self.settings)}"
            )
        try:
            self.profile = Profile(params.pop("scorers", DEFAULT_SCORERS))
            self.spill = Spill.of(params)
        except ValueError as exc:
            raise ValueError(f"kv_aware: {exc}") from None
        self._turn = 0
        self._chosen: dict[str, int] = {}  # replica -> the turn it was last chosen first

    def decide(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if len(endpoints) < 2:
            return Decision(list(endpoints), "single")
        self._turn += 1
        n = len(endpoints)
        ring = [endpoints[(self._turn + i) % n] for i in range(n)]
        scores = self.profile.scores(request, ring)
        chosen = [self._chosen.get(e.replica_id, 0) for e in ring]
        ranked = [ring[i] for i in sorted(range(n), key=lambda i: (-scores[i], chosen[i]))]
        decision = self.spill.pick(ranked, ring)
        self._chosen[decision.order[0].replica_id] = self._turn
        return decision
