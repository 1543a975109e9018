"""Routing policies by the name used in fleet.yaml (`models[].routing`)."""

from __future__ import annotations

from collections.abc import Callable

from deepfleet.routing.base import RoutingPolicy
from deepfleet.routing.round_robin import RoundRobin

_FACTORIES: dict[str, Callable[[], RoutingPolicy]] = {
    "round_robin": RoundRobin,
}


def known_policies() -> list[str]:
    return sorted(_FACTORIES)


def build_policy(name: str) -> RoutingPolicy:
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(
            f"unknown routing policy {name!r}; available: {', '.join(known_policies())}"
        ) from None
