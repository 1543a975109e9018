"""Routing policies across one model's replicas, each a plugin built by name."""

from deepfleet.routing.base import (
    Decision,
    Endpoint,
    ExplainingPolicy,
    RouteRequest,
    RoutingPolicy,
)
from deepfleet.routing.registry import NEEDS_TOKENS, build_policy, known_policies

__all__ = [
    "NEEDS_TOKENS",
    "Decision",
    "Endpoint",
    "ExplainingPolicy",
    "RouteRequest",
    "RoutingPolicy",
    "build_policy",
    "known_policies",
]
