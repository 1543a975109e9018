"""Approximate prefix affinity without KV events: consistent hashing of the prompt's leading
tokens, with bounded loads.

Requests whose first tokens agree (one system prompt, one conversation) hash to the same
replica, which then likely holds their prefix. The ring has `vnodes` points per replica, so a
replica joining or leaving moves only its share of keys. Bounded loads (Mirrokni et al.,
"Consistent Hashing with Bounded Loads"): a replica already above `load_factor` times the
mean load (plus one) passes the request on along the ring, so one hot prefix cannot swamp
it. `request.prefix_key` comes from the Router (a hash of the prompt's first tokens, or text);
without it the policy falls back to least load.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from deepfleet.routing.base import Decision, Endpoint, Need, RouteRequest, RoutingPolicy
from deepfleet.routing.load_order import by_load


def _point(label: str) -> int:
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "big")


class PrefixHash(RoutingPolicy):
    name = "prefix_hash"
    needs = frozenset({Need.TOKENS})
    settings = ("load_factor",)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        params = dict(params or {})
        self.vnodes = int(params.pop("vnodes", 64))
        self.load_factor = float(params.pop("load_factor", 1.25))
        if params:
            raise ValueError(
                f"prefix_hash takes `vnodes` and `load_factor`, got {', '.join(params)}"
            )
        if self.vnodes < 1 or self.load_factor < 1.0:
            raise ValueError("prefix_hash needs vnodes >= 1 and load_factor >= 1")
        self._members: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[str] = []
        self._turn = 0

    def _ring(self, endpoints: Sequence[Endpoint]) -> None:
        members = tuple(sorted(e.replica_id for e in endpoints))
        if members == self._members:
            return
        ring = sorted((_point(f"{m}#{i}"), m) for m in members for i in range(self.vnodes))
        self._members = members
        self._points = [p for p, _ in ring]
        self._owners = [m for _, m in ring]

    def decide(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if len(endpoints) < 2:
            return Decision(list(endpoints), "single")
        if request.prefix_key is None:
            self._turn += 1
            return Decision(by_load(endpoints, self._turn), "load")
        self._ring(endpoints)
        by_id = {e.replica_id: e for e in endpoints}
        walk: list[Endpoint] = []
        start = bisect.bisect_left(self._points, request.prefix_key & ((1 << 64) - 1))
        for step in range(len(self._points)):
            endpoint = by_id.get(self._owners[(start + step) % len(self._points)])
            if endpoint is not None and endpoint not in walk:
                walk.append(endpoint)
                if len(walk) == len(by_id):
                    break
        total = sum(e.load for e in endpoints)
        cap = math.ceil(self.load_factor * (total + 1) / len(endpoints))
        for position, endpoint in enumerate(walk):
            if endpoint.load < cap:
                order = [endpoint, *walk[:position], *walk[position + 1 :]]
                return Decision(order, "prefix" if position == 0 else "spill")
        return Decision(walk, "prefix")
