"""The routing policies a model may name (`models[].routing`) and the scorers a kv_aware
profile may weigh (`kv_cache.routing.scorers`), with the default profile: exactly those
registered in deepfleet.routing, whose registries refuse to load when the lists differ.

A leaf module, so that the schema can validate names without importing the policies (routing
reads the fleet state and the KV index, which import the config).
"""

from __future__ import annotations

from collections.abc import Mapping

POLICY_NAMES: tuple[str, ...] = ("kv_aware", "least_load", "power_of_two", "prefix_hash",
                                 "round_robin")  # fmt: skip
SCORER_NAMES: tuple[str, ...] = ("prefix", "prefill", "load", "kv_free", "spread")
DEFAULT_SCORERS: Mapping[str, float] = {
    "prefix": 3.0,
    "prefill": 1.0,
    "load": 1.0,
    "kv_free": 0.5,
    "spread": 1.0,
}


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The weights as floats; ValueError naming any unknown scorer or negative weight."""
    unknown = sorted(set(weights) - set(SCORER_NAMES))
    if unknown:
        raise ValueError(
            f"unknown scorer(s) {', '.join(unknown)}; known: {', '.join(SCORER_NAMES)}"
        )
    out = {name: float(w) for name, w in weights.items()}
    negative = sorted(name for name, w in out.items() if w < 0)
    if negative:
        raise ValueError(f"scorer weights must be >= 0: {', '.join(negative)}")
    return out
