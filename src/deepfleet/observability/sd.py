"""Prometheus HTTP service discovery over the fleet state.

`sd_targets` lists every engine's /metrics (role=engine, with model, replica and node) and the
gateway (role=gateway, with node). The gateway's worker processes share one port and merge
their metrics into one /metrics (prometheus-client multiprocess mode), so one gateway target
covers every worker.

An engine is listed once it has been ready or has restarted: a replica still loading its first
weights (DeepSeek-R1 can take most of an hour) is not down, but one that crashed is, so its
target stays listed through the restart and the engine-down alert can fire.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deepfleet.fleet.state import FleetState, ReplicaState, ReplicaStatus, StateFollower
from deepfleet.observability import fleet_metrics

StateSource = Callable[[], FleetState | None]
Endpoint = Callable[[Request], Awaitable[Response]]

SD_PATH = "/sd/targets"
FLEET_METRICS_PATH = "/metrics/fleet"
_GONE = (ReplicaState.STOPPING, ReplicaState.STOPPED)


def _address(url: str) -> tuple[str, dict[str, str]]:
    """host:port of a URL, and the labels that tell Prometheus its scheme and path prefix."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    extra = {}
    if parts.scheme == "https":
        extra["__scheme__"] = "https"
    if parts.path.strip("/"):
        extra["__metrics_path__"] = parts.path.rstrip("/") + "/metrics"
    return f"{host}:{port}", extra


def _watched(r: ReplicaStatus) -> bool:
    return r.state not in _GONE and (r.ready_at is not None or r.restarts > 0)


def sd_targets(state: FleetState) -> list[dict[str, object]]:
    """Target groups in Prometheus's HTTP SD format: [{"targets": [...], "labels": {...}}]."""
    if state.stopping:
        return []
    groups: list[dict[str, object]] = []
    for r in state.replicas:
        if not _watched(r):
            continue
        address, extra = _address(r.url)
        labels = {"role": "engine", "model": r.model, "replica": r.replica_id, "node": r.node}
        groups.append({"targets": [address], "labels": {**labels, **extra}})
    gw = state.gateway
    if gw is not None and gw.state not in _GONE:
        address, extra = _address(state.gateway_url)
        groups.append(
            {"targets": [address], "labels": {"role": "gateway", "node": gw.node, **extra}}
        )
    return groups


def _authorized(request: Request, token: str | None) -> bool:
    given = (request.headers.get("authorization") or "").encode()
    return token is None or hmac.compare_digest(given, f"Bearer {token}".encode())


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": {"message": "needs the metrics token", "type": "invalid_request_error",
                   "param": None, "code": "unauthorized"}},
        status_code=401,
    )  # fmt: skip


def sd_endpoint(state: StateSource, token: str | None = None) -> Endpoint:
    """GET handler answering `sd_targets` of the current state ([] while there is none).
    With a token, the request must carry `Authorization: Bearer TOKEN` (the gateway's
    metrics token: the list names internal engine addresses)."""

    async def targets(request: Request) -> Response:
        if not _authorized(request, token):
            return _unauthorized()
        current = state()
        return JSONResponse(sd_targets(current) if current is not None else [])

    return targets


def fleet_metrics_endpoint(state: StateSource, token: str | None = None) -> Endpoint:
    """GET handler answering the fleet state as metrics (`fleet_metrics.render`)."""

    async def metrics(request: Request) -> Response:
        if not _authorized(request, token):
            return _unauthorized()
        return Response(fleet_metrics.render(state()), media_type=fleet_metrics.CONTENT_TYPE)

    return metrics


def observability_routes(state: StateSource, token: str | None = None) -> list[Route]:
    """The routes a server mounts to publish the fleet to Prometheus: /sd/targets and
    /metrics/fleet."""
    return [
        Route(SD_PATH, sd_endpoint(state, token), methods=["GET"]),
        Route(FLEET_METRICS_PATH, fleet_metrics_endpoint(state, token), methods=["GET"]),
    ]


def state_file_reader(path: Path) -> StateSource:
    """A StateSource over fleet.json that parses the file again only when it changed (the
    gateway's StateFollower: cheap enough for a scrape every few seconds inside an event
    loop); None while there is no file."""
    follower = StateFollower(path)

    def read() -> FleetState | None:
        follower.poll()
        return follower.state if path.exists() else None

    return read
