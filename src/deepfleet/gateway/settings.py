"""What a gateway worker is handed: one frozen, picklable object.

The server entry (server.py) is the only part of the gateway that reads the command line, the
environment or gateway.json; it builds a `WorkerSettings` once and hands it to every worker
process as its app factory's argument. Below it, every part gets what it uses in its
constructor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deepfleet.config.state import StateSpec


@dataclass(frozen=True)
class GatewaySettings:
    """Limits and timeouts of one worker's request path."""

    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body; a larger one is answered 413 (also when only declared)."""
    connect_timeout_s: float = 5.0
    """Longest wait for an engine to accept a connection."""
    read_timeout_s: float = 600.0
    """Longest silence from an engine before its request fails."""
    refresh_s: float = 0.2
    """How often the endpoint table looks at the fleet state file."""
    metrics_token: str | None = None
    """Bearer token that /metrics requires; None: /metrics is open."""
    engine_key: str | None = field(default=None, repr=False)
    """Bearer token the engines require on /v1/* (the fleet's engine_api_key); None: none."""
    reasoning_cap: int | None = None
    """Cap on thinking tokens when neither the request nor its key sets one."""
    max_in_flight: int = 1024
    """Requests this worker sends upstream at once."""
    max_queue: int = 1024
    """Requests waiting for an upstream slot beyond that; more are answered 429."""
    queue_timeout_s: float = 30.0
    """Longest wait in that queue; then 503."""
    migration_limit: int = 3
    """Times one stream may move to another replica when its engine fails (migration.py);
    a model's `migration_limit` in the fleet state overrides it; 0 turns migration off."""
    stall_timeout_s: float = 30.0
    """Longest silence of an engine after a stream's first bytes before the stream migrates."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header names accepted besides loopback names and IP literals ("*": any)."""
    max_prompt_batch: int = 64
    """Most prompts in one /v1/completions request (a list `prompt`); more are answered 400."""


@dataclass(frozen=True)
class EdgeSettings:
    """The connection's deadlines and bounds (httpserver.py), before any request reaches the
    app."""

    head_timeout_s: float = 10.0
    """Longest time for a request head to arrive; then the connection is closed."""
    body_timeout_s: float = 60.0
    """Longest time for a request body to arrive after its head; then 408."""
    max_header_bytes: int = 64 * 1024
    """Largest request head; a larger one gets 431."""
    max_connections: int = 4096
    """Connections one worker serves at once; requests beyond get 503."""


@dataclass(frozen=True)
class WorkerSettings:
    """Everything one gateway worker process needs to build its app (`server.create_app`)."""

    state_file: Path
    """The fleet state file (fleet.json) the endpoint table and routing follow."""
    keys_db: Path
    """SQLite file of API keys, shared by the workers."""
    usage_db: Path
    """SQLite file of the requests/min and tokens/min buckets, shared by the workers."""
    state: StateSpec = field(default_factory=StateSpec)
    """The state backend (gateway.state): sqlite uses the two files above; postgres a DSN."""
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    """The request path's limits and timeouts."""
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    """The connection's deadlines and bounds."""
    relay: str | None = None
    """Address of the KV-event relay when several workers share the engines' event ports;
    None: this worker subscribes to the engines itself."""
    metrics_dir: Path | None = None
    """prometheus-client's multiprocess folder when several workers share one /metrics."""
