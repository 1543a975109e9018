"""Routing policies by the name used in fleet.yaml (`models[].routing`). A new policy is one
file in policies/, one line here and its name in deepfleet.config.routing (which the config
validates against; they must agree); what it needs and which `kv_cache.routing` keys it
takes, it declares itself (`needs`, `settings`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deepfleet.config.routing import POLICY_NAMES
from deepfleet.routing.base import Need, RoutingPolicy
from deepfleet.routing.policies.kv_aware import KvAware
from deepfleet.routing.policies.least_load import LeastLoad
from deepfleet.routing.policies.power_of_two import PowerOfTwo
from deepfleet.routing.policies.prefix_hash import PrefixHash
from deepfleet.routing.policies.round_robin import RoundRobin

_POLICIES: dict[str, type[RoutingPolicy]] = {
    "round_robin": RoundRobin,
    "least_load": LeastLoad,
    "power_of_two": PowerOfTwo,
    "prefix_hash": PrefixHash,
    "kv_aware": KvAware,
}
if sorted(_POLICIES) != sorted(POLICY_NAMES):
    raise ImportError(
        f"routing policies {sorted(_POLICIES)} differ from config.routing {sorted(POLICY_NAMES)}"
    )


def known_policies() -> list[str]:
    return sorted(_POLICIES)


def _policy_class(name: str) -> type[RoutingPolicy]:
    try:
        return _POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown routing policy {name!r}; available: {', '.join(known_policies())}"
        ) from None


def needs_of(name: str) -> frozenset[Need]:
    """What policy `name` reads beyond load; nothing for an unknown name."""
    policy = _POLICIES.get(name)
    return policy.needs if policy is not None else frozenset()


def build_policy(name: str, params: Mapping[str, Any] | None = None) -> RoutingPolicy:
    """The policy `name`, configured by `params` (each policy documents its own)."""
    return _policy_class(name)(params)


def policy_params(name: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """Policy `name`'s parameters taken from fleet.yaml's `kv_cache.routing` section."""
    return {k: section[k] for k in _policy_class(name).settings if k in section}
