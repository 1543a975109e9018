"""The `kv_cache:` section of fleet.yaml: KV-aware routing knobs, and KV offloading/sharing for
GPU engines (vLLM's native CPU offloading, or LMCache with CPU, disk and a shared remote tier).

    kv_cache:
      offload: lmcache            # none | cpu (vLLM native) | lmcache
      cpu_gib: 64                 # per replica
      disk: {path: /nvme/lmcache, gib: 500}
      remote: {kind: lmcache}     # the fleet starts an LMCache server; or {url: redis://h:6379}
      routing: {scorers: {prefix: 2, load: 1}, spill_abs: 8}
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from deepfleet.config.base import Strict
from deepfleet.config.routing import DEFAULT_SCORERS, check_weights
from deepfleet.net import reachable_host

# Beside the fleet state file: the `routing` section as the controller wrote it for the gateway.
KV_ROUTING_FILE = "kv_routing.json"


def check_relay_address(value: str) -> str:
    """`IP:PORT` with a concrete IP (gateways elsewhere connect to it) and a port whose next
    one is free for snapshots."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not IP:PORT (e.g. 10.0.0.1:5570)") from None
    if ip.is_unspecified:
        raise ValueError(f"{value!r}: give the address gateways connect to, not {host}")
    if not sep or not port.isdigit() or not 1 <= int(port) < 65535:
        raise ValueError(f"{value!r}: the port must be 1-65534 (PORT+1 serves snapshots)")
    return value


class KvRoutingSpec(Strict):
    """How the gateway weighs cached prefixes against load (policies kv_aware, prefix_hash)."""

    scorers: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_SCORERS),
        description="kv_aware: the profile, scorer name -> weight (each scorer maps an "
        "endpoint to [0, 1]; the weighted sum ranks them). Scorers: prefix (share of the "
        "prompt a replica holds), prefill (prefill work before this request's first token), "
        "load (idleness: running + waiting requests), kv_free (free KV cache), spread (for "
        "prompts no replica holds: caching little). A scorer left out does not count.",
    )
    spill_queued: int = Field(
        4,
        ge=0,
        description="kv_aware: spill to the least loaded replica when the cache-best one queues "
        "requests (vllm:num_requests_waiting > 0) and has this many more than it ...",
    )
    spill_abs: int = Field(
        32,
        ge=0,
        description="kv_aware: ... or has this many more, queue or not ...",
    )
    spill_rel: float = Field(1.5, ge=1, description="kv_aware: ... and this many times its load.")
    prefix_tokens: int = Field(
        256, ge=1, description="prefix_hash: leading prompt tokens that pick the replica."
    )
    load_factor: float = Field(
        1.25,
        ge=1,
        description="prefix_hash: a replica above this times the mean load passes requests on.",
    )
    pending_ttl_s: float = Field(
        30.0,
        ge=0,
        description="kv_aware: how long a replica counts as holding a prompt it was sent, "
        "announced or not (its prefill may queue; it may evict and recompute it).",
    )
    scrape_interval_s: float = Field(
        0.5, gt=0, description="How often each gateway worker reads every engine's /metrics."
    )
    index_max_blocks: int = Field(
        1_000_000,
        ge=1,
        description="Bound of the KV index per gateway worker, in (replica, block) entries.",
    )
    tokenize_inline_bytes: int = Field(
        16_384,
        ge=0,
        description="Request bodies larger than this are tokenized off the event loop.",
    )
    conversation_cache_tokens: int = Field(
        4_000_000,
        ge=0,
        description="Tokens of earlier turns kept per model so a chat is not re-tokenized whole.",
    )

    relay_tcp: str | None = Field(
        None,
        description="IP:PORT where the node's KV event relay also publishes on TCP (snapshots "
        "on PORT+1), for gateways on other hosts (python -m deepfleet.gateway.remote "
        "subscribes there). None: only the state dir's Unix socket. Anyone who reaches it "
        "learns which prompt prefixes the engines cache: use a private address (docs/lb.md).",
    )

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, v: dict[str, float]) -> dict[str, float]:
        return check_weights(v)

    @field_validator("relay_tcp")
    @classmethod
    def _relay_address(cls, v: str | None) -> str | None:
        return None if v is None else check_relay_address(v)


def read_routing_spec(state_dir: Path) -> KvRoutingSpec:
    """The section the controller wrote beside the fleet state, else the defaults."""
    try:
        return KvRoutingSpec.model_validate_json((state_dir / KV_ROUTING_FILE).read_text())
    except (OSError, ValueError):
        return KvRoutingSpec()


class DiskTier(Strict):
    path: Path = Field(description="Local folder for LMCache's disk tier (fast NVMe).")
    gib: float = Field(gt=0, description="Disk space LMCache may use per replica, in GiB.")


class RemoteTier(Strict):
    kind: Literal["lmcache", "redis"] = Field(
        "lmcache", description="Shared store: an LMCache server (lm://) or Redis (redis://)."
    )
    url: str | None = Field(
        None,
        description="An existing store, e.g. redis://10.0.0.5:6379; None: the fleet starts "
        "one on `host`:`port`.",
    )
    host: str = Field(
        "127.0.0.1",
        description="Where the fleet's own store listens; engines on other nodes need an "
        "address they reach (this node's).",
    )
    port: int = Field(65432, ge=1, le=65535, description="Port of the fleet's own store.")
    max_gib: float | None = Field(
        None,
        gt=0,
        description="Memory bound of the fleet's own Redis store (least recently used keys "
        "go first); the LMCache server has no bound of its own.",
    )

    def url_at(self, host: str) -> str:
        """The fleet's own store's URL as seen through `host`."""
        scheme = "lm" if self.kind == "lmcache" else "redis"
        return f"{scheme}://{host}:{self.port}"

    @property
    def address(self) -> str:
        """The URL engines' LMCache connectors use."""
        return self.url or self.url_at(reachable_host(self.host))


class KvCacheSpec(Strict):
    offload: Literal["none", "cpu", "lmcache"] = Field(
        "none",
        description="KV offloading on GPU engines: none; cpu (vLLM's native CPU offloading); "
        "lmcache (LMCache: CPU, disk and a remote tier shared by replicas).",
    )
    cpu_gib: float | None = Field(
        None, gt=0, description="CPU memory for offloaded KV per replica, in GiB."
    )
    chunk_size: int = Field(256, ge=16, description="LMCache chunk size in tokens.")
    disk: DiskTier | None = Field(None, description="LMCache's local disk tier.")
    remote: RemoteTier | None = Field(
        None, description="LMCache's remote tier, shared by every replica of the fleet."
    )
    routing: KvRoutingSpec = Field(
        default_factory=KvRoutingSpec, description="KV-aware routing in the gateway."
    )

    @model_validator(mode="after")
    def _consistent(self) -> KvCacheSpec:
        if self.offload == "cpu" and self.cpu_gib is None:
            raise ValueError("offload `cpu` needs `cpu_gib` (GiB of CPU memory per replica)")
        if self.offload != "lmcache" and (self.disk is not None or self.remote is not None):
            raise ValueError("`disk` and `remote` tiers need `offload: lmcache`")
        remote = self.remote
        if remote is not None and remote.max_gib is not None and remote.kind != "redis":
            raise ValueError("`remote.max_gib` bounds the fleet's own Redis (kind: redis)")
        return self
