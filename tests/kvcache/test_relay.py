"""The KV event relay (a gateway's workers, or every gateway instance of a node): it idles
without CPU and stops; a subscriber that arrives late learns what the engines announced before
it from the relay's snapshot; a gap is closed the same way; a restarted engine is forgotten."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
import zmq.asyncio
from pydantic import ValidationError

from deepfleet.config.kvcache import KvRoutingSpec
from deepfleet.config.schema import FleetConfig, GatewaySpec
from deepfleet.fleet.front import RELAY_ID, front_services
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.ports import free_port
from deepfleet.gateway.server import PROMETHEUS_ENV, kv_event_relay, worker_settings
from deepfleet.kvcache.events import EventStreams
from deepfleet.kvcache.hashing import block_hashes
from deepfleet.kvcache.index import KvIndex
from deepfleet.kvcache.relay import EventRelay, Source, node_relay_endpoint, relay_endpoint
from deepfleet.kvcache.snapshot import snapshot_endpoint
from deepfleet.kvcache.subscriber import EventSubscriber, Publisher, Resyncer
from tests.kvcache.events_util import BS, IpcEngine, payload, removed, stored, until


def thread_cpu_s(thread: threading.Thread) -> float:
    times = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    return times[thread.native_id]


def test_relay_without_event_sources_idles_and_stops_quickly(tmp_path: Path) -> None:
    relay = EventRelay(dict, relay_endpoint(tmp_path / "fleet.json"))  # no engine publishes
    relay.start()
    thread = relay._thread
    assert thread is not None and thread.native_id is not None
    try:
        time.sleep(0.3)
        before = thread_cpu_s(thread)
        time.sleep(1.5)
        used = thread_cpu_s(thread) - before
    finally:
        started = time.monotonic()
        relay.stop()
        stopped_in = time.monotonic() - started
    assert used < 0.05, f"the idle relay thread used {used:.3f} s of CPU in 1.5 s"
    assert not thread.is_alive()
    assert stopped_in < 1.0


# -- late subscribers catch up from the relay's snapshot ---------------------------------------


@contextlib.asynccontextmanager
async def relayed(tmp_path: Path) -> AsyncIterator[tuple[IpcEngine, EventRelay, dict[str, Source]]]:
    engine = IpcEngine(tmp_path / "kv-1.ipc")
    sources = {"m-0": Source(engine.endpoint)}
    relay = EventRelay(lambda: sources, relay_endpoint(tmp_path / "fleet.json"))
    relay.start()
    try:
        await asyncio.sleep(0.3)  # the relay connects to the engine on its first refresh
        yield engine, relay, sources
    finally:
        relay.stop()
        engine.close()


def gateway(relay: EventRelay) -> tuple[EventSubscriber, EventStreams, zmq.asyncio.Context]:
    """What one gateway process builds: an index fed by the relay."""
    context = zmq.asyncio.Context()
    streams = EventStreams(KvIndex())
    resyncer = Resyncer(streams, no_http, context, relay=relay.endpoint)
    return EventSubscriber(streams, resyncer, context, relay=relay.endpoint), streams, context


def no_http() -> Any:
    raise AssertionError("a relay's subscriber asks the relay, not the engine")


async def start(relay: EventRelay, url: str = "http://e0") -> tuple[EventSubscriber, EventStreams]:
    subscriber, streams, _ = gateway(relay)
    await subscriber.start()
    subscriber.set_publishers([Publisher("m-0", "unused", url)])
    return subscriber, streams


async def test_a_late_subscriber_learns_what_the_engine_announced_before_it(
    tmp_path: Path,
) -> None:
    async with relayed(tmp_path) as (engine, relay, _):
        early, early_streams = await start(relay)
        await asyncio.sleep(0.3)  # its SUB socket connects
        engine.publish(stored([11, 12], None, range(8)))
        engine.publish(stored([13], 12, range(8, 12)), stored([21], None, range(100, 104)))
        engine.publish(removed(21))
        await until(lambda: early_streams.index.blocks_of("m-0") == 3)
        # A gateway started now (a second instance, or one restarted) gets no event: the
        # engine announces a block once. The snapshot gives it the same index at once.
        late, late_streams = await start(relay)
        await until(lambda: late_streams.index.blocks_of("m-0") == 3)
        tokens = list(range(12))
        assert late_streams.index.match(block_hashes(tokens, BS)) == {"m-0": 3}
        assert late_streams.stats.gaps == 0 and relay.snapshots >= 2
        # ...and goes on from the live stream, in step with the early one.
        engine.publish(removed(13), stored([31], None, range(200, 204)))
        for streams in (early_streams, late_streams):
            await until(lambda s=streams: s.stream("m-0").expected == 4)
            assert streams.index.blocks_of("m-0") == 3
            assert streams.index.match(block_hashes(tokens, BS)) == {"m-0": 2}
        assert late_streams.stats.gaps == 0
        for sub in (early, late):
            await sub.stop()


async def test_a_gap_in_the_relayed_stream_is_closed_by_a_snapshot(tmp_path: Path) -> None:
    async with relayed(tmp_path) as (engine, relay, _):
        subscriber, streams = await start(relay)
        await asyncio.sleep(0.3)
        engine.publish(stored([11], None, range(4)))
        await until(lambda: streams.index.blocks_of("m-0") == 1)
        # The subscriber loses its place (as after a restart it was told of): the next batch
        # is a gap, and the relay's snapshot restores the replica's blocks, not forgets them.
        streams.restarted("m-0")
        engine.publish(stored([12], 11, range(4, 8)))
        await until(lambda: streams.index.blocks_of("m-0") == 2)
        assert streams.stats.gaps == 1
        assert streams.index.match(block_hashes(list(range(8)), BS)) == {"m-0": 2}
        await subscriber.stop()


async def test_a_restarted_engine_is_forgotten_by_the_relay(tmp_path: Path) -> None:
    async with relayed(tmp_path) as (engine, relay, sources):
        engine.publish(stored([11], None, range(4)))
        await until(lambda: relay.streams.index.blocks_of("m-0") == 1)
        # The state file says it restarted: its cache is empty, though no event says so yet.
        sources["m-0"] = Source(engine.endpoint, restarts=1)
        await until(lambda: relay.streams.index.blocks_of("m-0") == 0, within_s=3)
        late, late_streams = await start(relay)
        await until(lambda: late_streams.stream("m-0").resyncing is False)
        assert late_streams.index.blocks_of("m-0") == 0
        await late.stop()


async def test_no_relay_answer_forgets_and_goes_on(tmp_path: Path) -> None:
    endpoint = relay_endpoint(tmp_path / "fleet.json")  # nobody binds it
    context = zmq.asyncio.Context()
    streams = EventStreams(KvIndex())
    resyncer = Resyncer(streams, no_http, context, relay=endpoint)
    streams.begin_resync("m-0")
    streams.receive("m-0", 5, payload(stored([11], None, range(4))))
    assert await resyncer.run("m-0", "http://e0") == "forget"
    assert not streams.stream("m-0").resyncing and streams.index.blocks_of("m-0") == 1
    context.destroy(linger=0)


def test_instances_follow_the_node_relay_and_workers_their_own(tmp_path: Path) -> None:
    state_file = tmp_path / "fleet.json"
    settings = worker_settings(GatewaySpec(), state_file)
    two = GatewaySpec(instances=2)
    chosen, relay = kv_event_relay(settings, two, 1, state_file)
    assert relay is None and chosen.relay == node_relay_endpoint(state_file)
    assert chosen.relay != relay_endpoint(state_file)
    alone, relay = kv_event_relay(settings, GatewaySpec(), 1, state_file)
    assert relay is None and alone.relay is None


async def test_the_node_relay_process_answers_its_probe_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "fleet.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deepfleet.routing.node_relay", "--state-file", str(state_file),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    probe = HttpProbe(timeout_s=1.0)
    try:
        health = snapshot_endpoint(node_relay_endpoint(state_file))
        await until(lambda: Path(health.removeprefix("ipc://")).exists(), within_s=20)
        assert await probe(health)  # what the controller's supervisor asks (fleet/front.py)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert proc.stderr is not None and b"kv relay stopped" in await proc.stderr.read()
        assert not await probe(health)
    finally:
        await probe.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- the node relay on TCP, for gateways on other hosts ----------------------------------------


async def test_a_gateway_elsewhere_follows_the_relay_over_tcp(tmp_path: Path) -> None:
    """`kv_cache.routing.relay_tcp`: the relay also publishes on TCP (snapshots on the next
    port); a subscriber there gets the same live batches, and one that arrives late the
    snapshot, as on the Unix socket."""
    port = free_port()
    tcp = f"tcp://127.0.0.1:{port}"
    engine = IpcEngine(tmp_path / "kv-1.ipc")
    relay = EventRelay(
        lambda: {"m-0": Source(engine.endpoint)},
        relay_endpoint(tmp_path / "fleet.json"),
        also=[tcp],
    )
    relay.start()
    subs: list[EventSubscriber] = []

    async def subscribe(endpoint: str) -> EventStreams:
        context = zmq.asyncio.Context()
        streams = EventStreams(KvIndex())
        resyncer = Resyncer(streams, no_http, context, relay=endpoint)
        sub = EventSubscriber(streams, resyncer, context, relay=endpoint)
        await sub.start()
        sub.set_publishers([Publisher("m-0", "unused", "http://e0")])
        subs.append(sub)
        return streams

    try:
        await asyncio.sleep(0.3)
        local, remote = await subscribe(relay.endpoint), await subscribe(tcp)
        await asyncio.sleep(0.3)  # their SUB sockets connect
        engine.publish(stored([11, 12], None, range(8)))
        await until(lambda: local.index.blocks_of("m-0") == remote.index.blocks_of("m-0") == 2)
        late = await subscribe(tcp)  # a gateway started elsewhere after the engine announced
        await until(lambda: late.index.blocks_of("m-0") == 2)
        engine.publish(stored([13], 12, range(8, 12)))
        for streams in (local, remote, late):
            await until(lambda s=streams: s.index.blocks_of("m-0") == 3)
            assert streams.index.match(block_hashes(list(range(12)), BS)) == {"m-0": 3}
            assert streams.stats.gaps == 0
        assert relay.snapshots >= 3  # every subscriber asked, over the socket it follows
    finally:
        for sub in subs:
            await sub.stop()
        relay.stop()
        engine.close()


def test_gateways_follow_the_relay_that_serves_other_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway whose node relay publishes on TCP follows it too (its engines can have but
    one subscriber binding their TCP port); a remote gateway follows the address it is given;
    several workers then keep one /metrics, with no relay of their own."""
    monkeypatch.setenv(PROMETHEUS_ENV, "")  # kv_event_relay sets it; restored after the test
    state_file = tmp_path / "fleet.json"
    (tmp_path / "kv_routing.json").write_text(
        KvRoutingSpec(relay_tcp="127.0.0.1:5570").model_dump_json()
    )
    settings = worker_settings(GatewaySpec(), state_file)
    chosen, relay = kv_event_relay(settings, GatewaySpec(), 1, state_file)
    assert relay is None and chosen.relay == node_relay_endpoint(state_file)
    remote, relay = kv_event_relay(settings, GatewaySpec(), 2, state_file, "tcp://10.0.0.1:5570")
    assert relay is None and remote.relay == "tcp://10.0.0.1:5570"
    assert remote.metrics_dir == tmp_path / "prometheus"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0.0.0.0:5570", "not 0.0.0.0"),
        ("head:5570", "is not IP:PORT"),
        ("10.0.0.1:65535", "the port must be 1-65534"),
        ("10.0.0.1", "is not IP:PORT"),
    ],
)
def test_relay_tcp_is_an_address_to_connect_to(value: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        KvRoutingSpec(relay_tcp=value)
    assert KvRoutingSpec(relay_tcp="10.0.0.1:5570").relay_tcp == "10.0.0.1:5570"


def test_relay_tcp_starts_the_node_relay_with_one_gateway(tmp_path: Path) -> None:
    data = {"models": [{"name": "m"}], "kv_cache": {"routing": {"relay_tcp": "10.0.0.1:5570"}}}
    services = front_services(FleetConfig.model_validate(data), tmp_path)
    assert [s.status.replica_id for s in services] == [RELAY_ID]
    assert services[0].before_replicas  # it sees the engines' events from their first
    assert front_services(FleetConfig.model_validate({"models": [{"name": "m"}]}), tmp_path) == ()
