"""Where a local engine publishes its KV events, and which side binds the socket.

A KV event names blocks that the gateway's index then believes an engine holds, so whoever can
publish on the events socket steers KV-aware routing (issue 19, finding 12). On TCP loopback
every local process can connect to the gateway's bound port and inject events; a Unix socket
in the fleet's 0700 state dir can be reached only by the fleet's own user.

vLLM's ZmqEventPublisher (vllm/distributed/kv_events.py, `_is_bind_endpoint`) binds an
`ipc://` or `inproc://` endpoint and a wildcard TCP one (`tcp://*:PORT`), and connects to any
other. So:
- local engines get `ipc://<state_dir>/kv-<port>.ipc`: the engine binds it (a restarted engine
  binds it again, removing the old file) and the gateway connects;
- a concrete `tcp://HOST:PORT` (the fallback below, and fleets written before this) keeps the
  old roles: the engine connects and the gateway binds HOST:PORT.

A Ray replica's engine runs on another node, where no gateway can reach a Unix socket and none
can bind the node's address for it. It is given ENGINE_PICKS (`tcp://*:0`): vLLM binds its
node's IP (VLLM_HOST_IP, which the supervisor actor sets) on a port the OS picks, never the
any-address, and reports the address in `GET /kv_event_sources`; the actor records it in
fleet.json with `kv_events_bound`, and the subscribers connect to it (`engine_bound` below).

A Unix socket path holds at most 107 bytes (`sun_path`, 108 with its NUL, on Linux). A state
dir too deep for that falls back to TCP on loopback, with a warning that says how to get the
socket back (a shorter state_dir). So does a replica with several data-parallel ranks: vLLM
gives each rank its own endpoint by offsetting a TCP port (`offset_endpoint_port`) and refuses
an `ipc://` one for ranks above 0 (ValueError), which would stop the engine from starting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENGINE_PICKS = "tcp://*:0"
"""A Ray replica's events endpoint as its engine is given it: vLLM binds its node's IP on a
port the OS picks, and names the address in GET /kv_event_sources (`bound_endpoint`)."""

UNIX_PATH_MAX = 107
"""Bytes of a Unix socket path, without the NUL (Linux's sun_path is 108)."""


def socket_path(state_dir: Path, port: int) -> Path:
    """The Unix socket of the replica whose events id (plan.kv_events_port) is `port`."""
    return state_dir.absolute() / f"kv-{port}.ipc"


def data_parallel_ranks(engine_args: Mapping[str, Any]) -> int:
    """The data-parallel ranks of one vLLM server, from its engine arguments (either
    spelling; of two, the later one, as the engine's command line would take it)."""
    args = {k.replace("-", "_"): v for k, v in engine_args.items()}
    value = args.get("data_parallel_size")
    return int(value) if value is not None else 1


def local_events_endpoint(
    state_dir: Path, port: int | None, engine_args: Mapping[str, Any] | None = None
) -> str | None:
    """The endpoint a local engine publishes on: its socket in the state dir, or TCP on
    loopback when that path is too long for a Unix socket or the engine runs several
    data-parallel ranks (`engine_args`); None for a replica without KV events (no `port`)."""
    if port is None:
        return None
    if data_parallel_ranks(engine_args or {}) > 1:
        log.warning(
            "KV events use tcp://127.0.0.1:%d, which any local process can reach: vLLM offsets "
            "only TCP endpoints per data-parallel rank.",
            port,
        )
        return f"tcp://127.0.0.1:{port}"
    path = socket_path(state_dir, port)
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        log.warning(
            "KV events use tcp://127.0.0.1:%d, which any local process can reach: the socket "
            "path %s is longer than %d bytes. A shorter state_dir keeps them on a private "
            "Unix socket.",
            port, path, UNIX_PATH_MAX,
        )  # fmt: skip
        return f"tcp://127.0.0.1:{port}"
    return f"ipc://{path}"


def replica_events_endpoint(endpoint: str | None, port: int, host: str = "127.0.0.1") -> str:
    """Where the gateway finds one replica's events: the endpoint the state records, else
    (a state without one) the TCP port on `host`, as before Unix sockets."""
    return endpoint or f"tcp://{host}:{port}"


def subscriber_connects(endpoint: str, engine_bound: bool = False) -> bool:
    """True when the engine binds `endpoint` (so the subscriber connects to it): a Unix
    socket, or a TCP address the engine bound itself (`engine_bound`, a Ray replica's); False
    for a concrete TCP address the fleet gave the engine to connect to (the subscriber binds)."""
    return engine_bound or endpoint.startswith(("ipc://", "inproc://"))


def bound_endpoint(sources: object) -> str | None:
    """The TCP address data-parallel rank 0 of an engine given ENGINE_PICKS bound, from its
    `GET /kv_event_sources` answer ({"0": {"endpoint": "tcp://10.0.0.2:41234", ...}}); None
    when it names none or still a wildcard (a vLLM that binds `tcp://*:0` on every address)."""
    rank = sources.get("0") if isinstance(sources, dict) else None
    endpoint = rank.get("endpoint") if isinstance(rank, dict) else None
    if not isinstance(endpoint, str) or not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    if host in ("", "*", "0.0.0.0", "[::]", "::") or not port.isdigit() or int(port) == 0:
        return None
    return endpoint


__all__ = [
    "ENGINE_PICKS",
    "UNIX_PATH_MAX",
    "bound_endpoint",
    "data_parallel_ranks",
    "local_events_endpoint",
    "replica_events_endpoint",
    "socket_path",
    "subscriber_connects",
]
