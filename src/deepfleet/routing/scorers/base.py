"""The scorer contract: one fact about each endpoint mapped to [0, 1], higher is better.

A profile (profile.py) adds the scorers up by weight. `share` lets a scorer count for only
part of its weight on a given request (spread counts only as far as no replica holds the
prompt); it is 1.0 for most.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from deepfleet.routing.base import Endpoint, RouteRequest


class Scorer(Protocol):
    name: str

    def score(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        """One value in [0, 1] per endpoint, in the endpoints' order."""
        ...

    def share(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> float:
        """The part of this scorer's weight that counts for this request, in [0, 1]."""
        ...
