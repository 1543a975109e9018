"""An HAProxy config for several gateways: `deepfleet render lb` writes it, and local mode runs
it in front of `gateway.instances` gateway processes.

Why each setting (docs/lb.md has the whole story):
- `balance leastconn`: requests are long streams of very different lengths; counting open
  connections spreads them better than turns.
- health checks GET /health every second, down after 2 failures, up after 2 successes. A
  gateway that is stopping (SIGTERM) closes its listening socket at once and lets its streams
  finish for `gateway.drain_grace_s`: checks and new connections are refused, so it is taken
  out within ~2 s while what it carries completes. A killed gateway: the same, minus its streams.
- `retries` + `option redispatch`: a connection refused by a gateway that just died or is
  draining is tried on another one, so new requests succeed before the check notices; so is
  a request that a dying gateway accepted (the kernel's backlog) but closed without a byte of
  answer (`empty-response`; bodies up to HAProxy's buffer, 16 kB). An answer that has begun
  is never retried: those streams fail with their gateway.
- `X-Deepfleet-Gateway` on every answer names the gateway that carried it.
- SSE: `timeout server` / `timeout tunnel` above the gateway's own `read_timeout_s` (it ends a
  silent engine first, with a clear error event), `option http-no-delay` so each event goes out
  as it arrives, no request buffering, and `option http-server-close` so no idle connection to
  a gateway that is going away is reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deepfleet.config.schema import GatewaySpec


@dataclass(frozen=True)
class Backend:
    name: str
    host: str
    port: int


def _seconds(value: float) -> str:
    return f"{max(1, round(value))}s"


def haproxy_config(
    backends: Sequence[Backend],
    bind_host: str,
    bind_port: int,
    spec: GatewaySpec,
    *,
    maxconn: int | None = None,
) -> str:
    """The config text; `spec` gives the timeouts (read_timeout_s, head_timeout_s) and each
    gateway's connection limit (max_connections; more wait in HAProxy's queue)."""
    if not backends:
        raise ValueError("an HAProxy config needs at least one gateway")
    stream_s = _seconds(spec.read_timeout_s + 60)
    # No maxconn: HAProxy derives it from the file-descriptor limit it is given.
    conns = f"\n    maxconn {maxconn}" if maxconn else ""
    bind = f"[{bind_host}]" if ":" in bind_host else bind_host
    servers = "\n".join(
        f"    server {b.name} {b.host}:{b.port} check maxconn {spec.max_connections}"
        for b in backends
    )
    return f"""# deepfleet: HAProxy in front of {len(backends)} gateway(s) (docs/lb.md).
global{conns}
    log stderr format short local0 notice

defaults
    mode http
    log global
    option httplog
    option dontlognull
    option http-server-close
    option http-no-delay
    option redispatch 1
    retries 3
    retry-on conn-failure empty-response
    timeout connect 2s
    timeout client {stream_s}
    timeout server {stream_s}
    timeout tunnel {stream_s}
    timeout http-request {_seconds(spec.head_timeout_s)}
    timeout http-keep-alive 10s
    timeout queue 30s
    timeout check 2s

frontend deepfleet
    bind {bind}:{bind_port}
    default_backend gateways

backend gateways
    balance leastconn
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2
    # Which gateway carried an answer (for debugging; the names are not secrets).
    http-response set-header X-Deepfleet-Gateway %s
{servers}
"""
