"""Routing policies across one model's replicas, each a plugin built by name."""

from deepfleet.routing.base import Endpoint, RouteRequest, RoutingPolicy
from deepfleet.routing.registry import build_policy, known_policies

__all__ = ["Endpoint", "RouteRequest", "RoutingPolicy", "build_policy", "known_policies"]
