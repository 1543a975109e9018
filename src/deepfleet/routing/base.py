"""The routing contract: a request and endpoint snapshots in, an order of preference out.

Policies are pure: everything they weigh arrives in the snapshots (the Router fills load and
prefix facts in, router.py). Every field beyond the first few has a default, so a policy that
needs nothing more (round robin) sees plain endpoints. A policy says once, in `needs`, which
facts beyond load it reads; the Router and its feeds provide exactly those.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class Need(StrEnum):
    """What a policy reads beyond the endpoints' load."""

    TOKENS = "tokens"
    """The prompt's block hashes and prefix key (the model's tokenizer is loaded)."""
    EVENTS = "events"
    """Each replica's cached blocks from its KV events (the router also records what it sent
    as pending blocks in the index)."""


@dataclass(frozen=True)
class Endpoint:
    """A snapshot of one ready replica as the gateway sees it."""

    replica_id: str
    model: str
    url: str
    in_flight: int = 0
    """Requests this gateway worker has open on the replica (always current)."""
    running: int = 0
    """The engine's `vllm:num_requests_running`, as last scraped (all gateway workers)."""
    waiting: int = 0
    """The engine's `vllm:num_requests_waiting`, as last scraped."""
    kv_usage: float = 0.0
    """The engine's `vllm:kv_cache_usage_perc` in [0, 1], as last scraped."""
    routed: int = 0
    """Requests this worker sent to the replica since that scrape (not yet in its counts)."""
    matched_blocks: int = 0
    """Leading blocks of this request that the replica holds, from its KV events."""
    prefill_blocks: int = 0
    """Blocks of earlier requests the replica has yet to compute: its prefill backlog."""
    cached_blocks: int = 0
    """Blocks the replica holds in its prefix cache, from its KV events."""
    role: str = ""
    """`prefill` or `decode` in a disaggregated model (deepfleet.gateway.pd), else empty."""

    @property
    def load(self) -> int:
        """Requests on the replica: the engine's counts plus what was sent since they were
        read, or this worker's open requests when those are more."""
        return max(self.in_flight, self.running + self.waiting + self.routed)


@dataclass(frozen=True)
class RouteRequest:
    model: str
    body: bytes = b""
    block_hashes: tuple[int, ...] = ()
    """Chained hashes of the prompt's full KV blocks (deepfleet.kvcache.hashing); empty when
    the model has no tokenizer the gateway can load."""
    prompt_tokens: int = 0
    prefix_key: int | None = None
    """A hash of the prompt's leading tokens (or text), for approximate prefix routing."""


@dataclass(frozen=True)
class Decision:
    """An order plus why its first endpoint was chosen (a metric label)."""

    order: list[Endpoint]
    reason: str


class RoutingPolicy(ABC):
    """Base of every policy. The registry reads the class attributes without building one."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[Need]] = frozenset()
    """What the policy reads beyond load (declared here, nowhere else)."""
    settings: ClassVar[tuple[str, ...]] = ()
    """Keys of fleet.yaml's `kv_cache.routing` section the policy takes as parameters."""

    @abstractmethod
    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        """Configured by `params`; ValueError naming what is wrong."""

    @abstractmethod
    def decide(self, request: RouteRequest, endpoints: Sequence[Endpoint]) -> Decision:
        """All endpoints, most preferred first (the gateway retries down the list on failure
        before the first byte), and why the first was chosen. The order is never empty when
        `endpoints` is not."""
