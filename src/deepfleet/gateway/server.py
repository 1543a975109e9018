"""Run the gateway: uvicorn (uvloop + httptools), N worker processes on one port.

This module is the only part of the gateway that reads the command line, the environment or
gateway.json. `main` builds one `WorkerSettings` (settings.py) and every worker gets it as the
argument of its app factory, `create_app(settings)`:

uvicorn's Config holds the factory as `functools.partial(create_app, settings)`. With one
worker uvicorn calls it in this process; with N, uvicorn's own supervisor (`Multiprocess`)
spawns each worker with the Config pickled as its argument and the socket this process bound,
so the settings reach the workers as an object, and restarting a dead worker, signals and the
graceful stop stay uvicorn's. `uvicorn.run` refuses a non-string app with several workers, so
`serve` does the few lines of it the gateway needs. (A 0600 settings file in the state dir
would still need its path passed to each worker through the environment, since uvicorn calls
a factory without arguments, and a file to keep in step with the process.)

One environment variable remains, prometheus-client's own: PROMETHEUS_MULTIPROC_DIR switches
that library to its multiprocess mode when it is imported in each worker.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import os
import shutil
import sys
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from deepfleet.config.kvcache import read_routing_spec
from deepfleet.config.schema import GatewaySpec
from deepfleet.config.state import StateError
from deepfleet.fleet.files import METRICS_TOKEN_FILE, metrics_token, read_engine_key
from deepfleet.gateway.app import Gateway
from deepfleet.gateway.asgi import GatewayASGI
from deepfleet.gateway.httpserver import EdgeConfig
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.settings import EdgeSettings, GatewaySettings, WorkerSettings
from deepfleet.gateway.store.open import has_keys, open_state, usage_db_path
from deepfleet.kvcache.relay import EventRelay, node_relay_endpoint, relay_endpoint
from deepfleet.net import is_loopback
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds
from deepfleet.routing.follow import event_ports

# uvicorn's httptools protocol that can send a streamed answer's head with its first chunk.
HTTP_PROTOCOL = "deepfleet.gateway.httpserver:GatewayHttpProtocol"
PROMETHEUS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def load_spec(path: Path | None) -> GatewaySpec:
    return GatewaySpec.model_validate_json(path.read_text()) if path else GatewaySpec()


def worker_settings(spec: GatewaySpec, state_file: Path) -> WorkerSettings:
    """A worker's settings from gateway.json's spec (keys.db beside the state file unless the
    spec names one; the usage buckets beside the keys)."""
    keys_db = spec.keys_db or state_file.parent / "keys.db"
    a = spec.admission
    return WorkerSettings(
        state_file=state_file,
        keys_db=keys_db,
        usage_db=usage_db_path(keys_db),
        state=spec.state,
        gateway=GatewaySettings(
            max_body_bytes=spec.max_body_bytes,
            read_timeout_s=spec.read_timeout_s,
            metrics_token=spec.metrics_token,
            engine_key=read_engine_key(state_file.parent),
            reasoning_cap=spec.reasoning_cap,
            max_in_flight=a.max_in_flight,
            max_queue=a.max_queue,
            queue_timeout_s=a.queue_timeout_s,
            allowed_hosts=tuple(spec.allowed_hosts),
            stall_timeout_s=spec.stall_timeout_s,
            max_prompt_batch=spec.max_prompt_batch,
        ),
        edge=EdgeSettings(
            head_timeout_s=spec.head_timeout_s,
            body_timeout_s=spec.body_timeout_s,
            max_header_bytes=spec.max_header_bytes,
            max_connections=spec.max_connections,
        ),
    )


def with_bind_host(settings: WorkerSettings, host: str) -> WorkerSettings:
    """The bind address is a name clients may use, unless it is the any-address."""
    if host in ("0.0.0.0", "::", ""):
        return settings
    hosts = (*settings.gateway.allowed_hosts, host)
    return dataclasses.replace(
        settings, gateway=dataclasses.replace(settings.gateway, allowed_hosts=hosts)
    )


def create_app(settings: WorkerSettings) -> GatewayASGI:
    """uvicorn's factory, once per worker process: each worker builds its own gateway (routing
    state, ejections, admission queue are per worker; keys and rate limits are shared through
    the state backend)."""
    metrics = GatewayMetrics(multiprocess_dir=settings.metrics_dir)
    table = EndpointTable(settings.state_file)
    routing = RoutingFeeds(
        table,
        read_routing_spec(settings.state_file.parent).model_dump(),
        registry=metrics.registry,
        relay=settings.relay,
    )
    state = open_state(settings.state, settings.keys_db)
    gateway = Gateway(
        table,
        state.keys,
        state.limits,
        settings.gateway,
        metrics,
        routing,
    )
    app = gateway.app()
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
    p.add_argument("--relay", help="a KV event relay to follow (a remote gateway's: remote.py)")
    args = p.parse_args(argv)
    state_file = args.state_file.resolve()
    spec = load_spec(args.settings)
    settings = worker_settings(spec, state_file)
    host = args.host
    try:
        any_key = has_keys(settings.state, settings.keys_db)
    except StateError as exc:
        sys.exit(f"gateway.state: {exc}")
    if not is_loopback(host) and not any_key:
        print(
            f"WARNING: no API key exists, so the gateway serves only on 127.0.0.1, not on "
            f"{host}. Create one with `deepfleet keys create --name NAME` and restart.",
            file=sys.stderr,
            flush=True,
        )
        host = "127.0.0.1"
    settings = guard_metrics(with_bind_host(settings, host), host)
    settings, relay = kv_event_relay(settings, spec, args.workers, state_file, args.relay)
    try:
        serve(uvicorn_config(settings, host, args.port, args.workers, args.log_level, spec))
    finally:
        if relay is not None:
            relay.stop()


def kv_event_relay(
    settings: WorkerSettings,
    spec: GatewaySpec,
    workers: int,
    state_file: Path,
    remote: str | None = None,
) -> tuple[WorkerSettings, EventRelay | None]:
    """Where this gateway's processes get the engines' KV events from: the `remote` relay
    when given (a gateway on another host); the node's relay process with `instances > 1`
    or when it also serves other hosts (`relay_tcp`); else, with several workers, a relay in
    this main process (started here, stopped by the caller); else each engine directly."""
    routing = read_routing_spec(state_file.parent)
    if remote is None and (spec.instances > 1 or routing.relay_tcp):
        # Every instance follows the node's relay process (routing/node_relay.py), which the
        # controller runs beside them: the same events, and a snapshot to catch up.
        remote = node_relay_endpoint(state_file)
    if workers > 1:  # one /metrics for all workers: prometheus-client's multiprocess mode
        metrics_dir = state_file.parent / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ[PROMETHEUS_ENV] = str(metrics_dir)
        settings = dataclasses.replace(settings, metrics_dir=metrics_dir)
    if remote is not None:
        return dataclasses.replace(settings, relay=remote), None
    if workers <= 1:
        return settings, None
    # One subscriber per engine is enough (and only one process can bind a TCP events port):
    # this one, relaying to all workers, and catching up one started again.
    relay = EventRelay(
        event_ports(state_file), relay_endpoint(state_file), routing.index_max_blocks
    )
    relay.start()
    return dataclasses.replace(settings, relay=relay.endpoint), relay


def guard_metrics(settings: WorkerSettings, host: str) -> WorkerSettings:
    """/metrics (key names) and /sd/targets (engine addresses) need the metrics token on a
    non-loopback address: one the config does not set is generated into the state dir's
    0600 metrics_token. No token and none can be written: the gateway does not start."""
    if is_loopback(host) or settings.gateway.metrics_token:
        return settings
    state_dir = settings.state_file.parent
    try:
        token = metrics_token(state_dir)
    except OSError as exc:
        sys.exit(f"gateway.metrics_token is not set and {host} is not loopback: set it ({exc})")
    print(
        f"NOTE: /metrics and /sd/targets on {host} need a token; generated one into "
        f"{state_dir / METRICS_TOKEN_FILE} (or set gateway.metrics_token).",
        file=sys.stderr,
        flush=True,
    )
    gateway = dataclasses.replace(settings.gateway, metrics_token=token)
    return dataclasses.replace(settings, gateway=gateway)


def uvicorn_config(
    settings: WorkerSettings, host: str, port: int, workers: int, log_level: str, spec: GatewaySpec
) -> uvicorn.Config:
    return EdgeConfig(
        functools.partial(create_app, settings),
        edge=settings.edge,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=HTTP_PROTOCOL,
        log_level=log_level,
        access_log=False,
        # The gateway reads no client address or scheme, so uvicorn's X-Forwarded-* rewrite
        # (a middleware frame and a headers dict per request) buys nothing; nor does
        # advertising the server in every answer's head.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(spec.drain_grace_s),
    )


def serve(config: uvicorn.Config) -> None:
    """What `uvicorn.run` does with an app factory object: serve in this process, or bind the
    socket here and supervise `config.workers` spawned workers."""
    if config.workers > 1:
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
