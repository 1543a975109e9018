"""A profile: scorers combined by weight (llm-d's scorer step).

    score(endpoint) = sum over the profile's scorers s of  weight_s * share_s * s(endpoint)

added in the registry's order (scorers/__init__.py), whatever order the config lists them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from deepfleet.config.routing import check_weights
from deepfleet.routing.base import Endpoint, RouteRequest
from deepfleet.routing.scorers import SCORERS, Scorer


class Profile:
    def __init__(self, weights: Mapping[str, float]) -> None:
        checked = check_weights(weights)
        self.weights = {name: checked[name] for name in SCORERS if name in checked}
        self._terms: list[tuple[Scorer, float]] = [
            (SCORERS[name], w) for name, w in self.weights.items()
        ]

    def scores(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        total = [0.0] * len(endpoints)
        for scorer, weight in self._terms:
            w = weight * scorer.share(request, endpoints)
            for i, value in enumerate(scorer.score(request, endpoints)):
                total[i] += w * value
        return total
