"""The routing contract: a request and endpoint snapshots in, an order of preference out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Endpoint:
    """A snapshot of one ready replica as the gateway sees it."""

    replica_id: str
    model: str
    url: str
    in_flight: int = 0


@dataclass(frozen=True)
class RouteRequest:
    model: str
    body: bytes = b""


class RoutingPolicy(Protocol):
    name: str

    def order(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        """All endpoints, most preferred first; the gateway retries down the list on failure
        before the first byte. Never empty when `endpoints` is not."""
        ...
