"""The load balancer across one model's replicas: endpoint health and ejection
(endpoints.py), engine load (scraper.py), the Router that decides (router.py) and what keeps
its inputs current (feeds.py), and the policies (policies/, scorers/), each a plugin built
by name (registry.py)."""

from deepfleet.routing.base import Decision, Endpoint, Need, RouteRequest, RoutingPolicy
from deepfleet.routing.registry import build_policy, known_policies, needs_of, policy_params

__all__ = [
    "Decision",
    "Endpoint",
    "Need",
    "RouteRequest",
    "RoutingPolicy",
    "build_policy",
    "known_policies",
    "needs_of",
    "policy_params",
]
