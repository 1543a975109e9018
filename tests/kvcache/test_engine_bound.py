"""A Ray replica's KV events (kvcache/endpoints.py, ENGINE_PICKS): vLLM's own publisher binds
its node's IP on a port of its choosing; fleet.json records that address with
`kv_events_bound`, and both the node's relay (which follows fleet.json) and a gateway that
subscribes by itself connect to it. Before, both would try to bind the engine's port."""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zmq.asyncio

from deepfleet.fleet.state import FleetState, ReplicaState, ReplicaStatus, write_state
from deepfleet.kvcache.endpoints import ENGINE_PICKS, bound_endpoint
from deepfleet.kvcache.events import EventStreams
from deepfleet.kvcache.hashing import block_hashes
from deepfleet.kvcache.index import KvIndex
from deepfleet.kvcache.relay import EventRelay, relay_endpoint
from deepfleet.kvcache.subscriber import EventSubscriber, Publisher, Resyncer
from deepfleet.routing.follow import event_ports
from tests.kvcache.events_util import until

TOKENS = list(range(2000, 2064))


@pytest.fixture(scope="module")
def vllm_events() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("vllm.distributed.kv_events")


def batch(events: Any, i: int) -> Any:
    return events.KVEventBatch(
        ts=time.time(),
        events=[
            events.BlockStored(
                block_hashes=[i + 1], parent_block_hash=None if i == 0 else i,
                token_ids=TOKENS[16 * i : 16 * i + 16], block_size=16, lora_id=None,
                medium="GPU", lora_name=None,
            )
        ],
    )  # fmt: skip


def replica_on_a_node(endpoint: str) -> ReplicaStatus:
    """What the controller mirrors from the supervisor actor once the engine is ready."""
    port = int(endpoint.rpartition(":")[2])
    return ReplicaStatus(
        "m-0", "m", "vllm", "http://127.0.0.1:9", state=ReplicaState.READY,
        kv_events_port=port, kv_events_endpoint=endpoint, kv_events_bound=True,
    )  # fmt: skip


async def test_the_relay_and_a_gateway_connect_to_an_engine_that_bound_its_nodes_ip(
    tmp_path: Path, vllm_events: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_HOST_IP", "127.0.0.1")  # what the actor sets: its node's IP
    publisher = vllm_events.ZmqEventPublisher(
        data_parallel_rank=0, endpoint=ENGINE_PICKS, topic="kv-events"
    )
    # vLLM names the address it bound in GET /kv_event_sources, from this config.
    config = publisher.get_publisher_config()
    endpoint = bound_endpoint({"0": {"endpoint": config.endpoint}})
    assert endpoint is not None and endpoint.startswith("tcp://127.0.0.1:"), config.endpoint
    state_file = tmp_path / "fleet.json"
    state = FleetState(controller_pid=1, gateway_url="", cluster="ray")
    state.replicas.append(replica_on_a_node(endpoint))
    write_state(state_file, state)
    relay = EventRelay(event_ports(state_file), relay_endpoint(state_file))
    context = zmq.asyncio.Context()
    streams = EventStreams(KvIndex())
    async with aiohttp.ClientSession() as session:
        resyncer = Resyncer(streams, lambda: session, context)
        direct = EventSubscriber(streams, resyncer, context)  # a gateway without a relay
        relay.start()
        try:
            direct.set_publishers([Publisher("m-0", endpoint, "http://127.0.0.1:9", bound=True)])
            await asyncio.sleep(1.5)  # the relay follows fleet.json every second
            for i in range(4):
                publisher.publish(batch(vllm_events, i))
            hashes = block_hashes(TOKENS, 16)
            await until(lambda: streams.index.match(hashes) == {"m-0": 4})
            await until(lambda: relay.streams.index.match(hashes) == {"m-0": 4})
            assert streams.stats.gaps == 0 and relay.streams.stats.gaps == 0
        finally:
            relay.stop()
            await direct.stop()
            publisher.shutdown()
            context.destroy(linger=0)
