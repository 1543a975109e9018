"""Routing policies by the name used in fleet.yaml (`models[].routing`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from deepfleet.routing.base import RoutingPolicy
from deepfleet.routing.kv_aware import KvAware
from deepfleet.routing.least_load import LeastLoad
from deepfleet.routing.power_of_two import PowerOfTwo
from deepfleet.routing.prefix_hash import PrefixHash
from deepfleet.routing.round_robin import RoundRobin


def _round_robin(params: Mapping[str, Any] | None) -> RoutingPolicy:
    if params:
        raise ValueError(f"round_robin takes no parameters, got {', '.join(params)}")
    return RoundRobin()


_FACTORIES: dict[str, Callable[[Mapping[str, Any] | None], RoutingPolicy]] = {
    "round_robin": _round_robin,
    "least_load": LeastLoad,
    "power_of_two": PowerOfTwo,
    "prefix_hash": PrefixHash,
    "kv_aware": KvAware,
}

# Policies that need the KV routing context's facts: tokens and prefix matches, not only load.
NEEDS_TOKENS = frozenset({"kv_aware", "prefix_hash"})


def known_policies() -> list[str]:
    return sorted(_FACTORIES)


def build_policy(name: str, params: Mapping[str, Any] | None = None) -> RoutingPolicy:
    """The policy `name`, configured by `params` (each policy documents its own)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown routing policy {name!r}; available: {', '.join(known_policies())}"
        ) from None
    return factory(params)
