"""Run the gateway: uvicorn (uvloop + httptools), N worker processes on one port."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import shutil
import sys
from pathlib import Path

import uvicorn

from deepfleet.config.schema import GatewaySpec
from deepfleet.gateway.app import Gateway, GatewaySettings
from deepfleet.gateway.asgi import GatewayASGI
from deepfleet.gateway.keys import KeyStore
from deepfleet.gateway.limits import TokenBuckets
from deepfleet.kvcache.relay import RELAY_ENV, EventRelay, relay_endpoint
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.follow import event_ports

# uvicorn's httptools protocol that can send a streamed answer's head with its first chunk.
HTTP_PROTOCOL = "deepfleet.gateway.httpserver:GatewayHttpProtocol"
STATE_ENV = "DEEPFLEET_GATEWAY_STATE_FILE"
SETTINGS_ENV = "DEEPFLEET_GATEWAY_SETTINGS"


def settings_from(spec: GatewaySpec) -> GatewaySettings:
    a = spec.admission
    return GatewaySettings(
        max_body_bytes=spec.max_body_bytes,
        read_timeout_s=spec.read_timeout_s,
        metrics_token=spec.metrics_token,
        reasoning_cap=spec.reasoning_cap,
        max_in_flight=a.max_in_flight,
        max_queue=a.max_queue,
        queue_timeout_s=a.queue_timeout_s,
    )


def load_spec(path: Path | None, state_file: Path) -> GatewaySpec:
    spec = GatewaySpec.model_validate_json(path.read_text()) if path else GatewaySpec()
    if spec.keys_db is None:
        spec = spec.model_copy(update={"keys_db": state_file.parent / "keys.db"})
    return spec


def create_app() -> GatewayASGI:
    """uvicorn factory: each worker process builds its own gateway (routing state, ejections,
    admission queue are per worker; keys and rate limits are shared through SQLite)."""
    state_file = Path(os.environ[STATE_ENV])
    settings_path = os.environ.get(SETTINGS_ENV)
    spec = load_spec(Path(settings_path) if settings_path else None, state_file)
    assert spec.keys_db is not None
    keys = KeyStore(spec.keys_db)
    buckets = TokenBuckets(spec.keys_db.with_name(spec.keys_db.stem + "-usage.db"))
    app = Gateway(EndpointTable(state_file), keys, buckets, settings_from(spec)).app()
    freeze_startup_heap()
    return app


def freeze_startup_heap() -> None:
    """Keep what startup built (modules, the app: ~60k objects) out of the cyclic GC.

    Streams under load leave long-lived objects behind, so full (oldest-generation)
    collections come every several seconds, and each scanned the whole heap: 20-45 ms
    measured at 256 streams on the overhead benchmark, a pause every stream in flight and
    every first token waited through. They collected nothing: the relay makes no cycles.
    Frozen objects are never scanned (nor collected if they become cyclic garbage, which
    startup objects do not). vLLM's API server does the same after its startup.
    """
    gc.collect()
    gc.freeze()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m deepfleet.gateway",
        description="deepfleet gateway (started by the controller)",
    )
    p.add_argument("--state-file", required=True, type=Path)
    p.add_argument("--settings", type=Path, help="gateway.json written by the controller")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    state_file = args.state_file.resolve()
    os.environ[STATE_ENV] = str(state_file)
    if args.settings:
        os.environ[SETTINGS_ENV] = str(args.settings.resolve())
    spec = load_spec(args.settings, state_file)
    assert spec.keys_db is not None
    host = args.host
    if not is_loopback(host) and not KeyStore(spec.keys_db).all():
        print(
            f"WARNING: no API key exists, so the gateway serves only on 127.0.0.1, not on "
            f"{host}. Create one with `deepfleet keys create --name NAME` and restart.",
            file=sys.stderr,
            flush=True,
        )
        host = "127.0.0.1"
    relay: EventRelay | None = None
    if args.workers > 1:
        # One /metrics for all workers: prometheus-client's multiprocess mode.
        prom_dir = state_file.parent / "prometheus"
        shutil.rmtree(prom_dir, ignore_errors=True)
        prom_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
        # Only one process can bind an engine's KV events port: this one, relaying to all.
        relay = EventRelay(event_ports(state_file), relay_endpoint(state_file))
        relay.start()
        os.environ[RELAY_ENV] = relay.endpoint
    try:
        _serve(args, host, spec)
    finally:
        if relay is not None:
            relay.stop()


def _serve(args: argparse.Namespace, host: str, spec: GatewaySpec) -> None:
    uvicorn.run(
        "deepfleet.gateway.server:create_app",
        factory=True,
        host=host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http=HTTP_PROTOCOL,
        log_level=args.log_level,
        access_log=False,
        # The gateway reads no client address or scheme, so uvicorn's X-Forwarded-* rewrite
        # (a middleware frame and a headers dict per request) buys nothing; nor does
        # advertising the server in every answer's head.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(spec.drain_grace_s),
    )
