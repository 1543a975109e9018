"""A gap closed through the engine's replay endpoint, against vLLM's own ZMQ publisher."""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any

import aiohttp
import pytest
import zmq.asyncio
from aiohttp import web

from deepfleet.fleet.ports import free_port
from deepfleet.kvcache.events import EventStreams
from deepfleet.kvcache.hashing import block_hashes
from deepfleet.kvcache.index import KvIndex
from deepfleet.kvcache.subscriber import EventSubscriber, Publisher, Resyncer
from tests.kvcache.events_util import until

TOKENS = list(range(1000, 1064))


@pytest.fixture(scope="module")
def vllm_events() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("vllm.distributed.kv_events")


def batch(events: Any, i: int) -> Any:
    parent = None if i == 0 else i
    return events.KVEventBatch(
        ts=time.time(),
        events=[
            events.BlockStored(
                block_hashes=[i + 1], parent_block_hash=parent,
                token_ids=TOKENS[16 * i : 16 * i + 16], block_size=16, lora_id=None,
                medium="GPU", lora_name=None,
            )
        ],
    )  # fmt: skip


async def test_replay_fills_a_gap(vllm_events: Any) -> None:
    events_port, replay_port = free_port(), free_port()
    publisher = vllm_events.ZmqEventPublisher(
        data_parallel_rank=0,
        endpoint=f"tcp://127.0.0.1:{events_port}",
        replay_endpoint=f"tcp://127.0.0.1:{replay_port}",
        topic="kv-events",
    )
    # The engine's HTTP side: /kv_event_sources names the replay endpoint, as vLLM's does.
    app = web.Application()
    sources = {
        "0": {
            "endpoint": f"tcp://127.0.0.1:{events_port}",
            "replay_endpoint": f"tcp://*:{replay_port}",
            "topic": "kv-events",
        }
    }

    async def kv_event_sources(request: web.Request) -> web.Response:
        return web.json_response(sources)

    app.router.add_get("/kv_event_sources", kv_event_sources)
    runner = web.AppRunner(app)
    await runner.setup()
    http_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    context = zmq.asyncio.Context()
    index = KvIndex()
    streams = EventStreams(index)
    how: list[str] = []
    async with aiohttp.ClientSession() as session:
        resyncer = Resyncer(streams, lambda: session, context, lambda r, h: how.append(h))
        subscriber = EventSubscriber(streams, resyncer, context)
        try:
            # Batches 0 and 1 go out before the subscriber is bound: lost.
            publisher.publish(batch(vllm_events, 0))
            publisher.publish(batch(vllm_events, 1))
            # vLLM's publisher thread sends from a queue: wait until both went out (into its
            # replay buffer) before the subscriber binds, or a slow thread on a loaded box
            # sends them after the subscription and there is no gap to fill.
            await until(lambda: len(publisher._buffer) == 2)
            subscriber.set_publishers(
                [Publisher("r", f"tcp://127.0.0.1:{events_port}", f"http://127.0.0.1:{http_port}")]
            )
            await asyncio.sleep(0.5)  # the PUB socket reconnects to the bound port
            for i in (2, 3):
                publisher.publish(batch(vllm_events, i))
            hashes = block_hashes(TOKENS, 16)
            # The replayed batches reach the index before the replay's end frame, and the
            # resync reports how only after that: wait for both (CI once looked in between).
            await until(lambda: index.match(hashes) == {"r": 4} and bool(how))
            assert how == ["replay"] and streams.stats.gaps == 1
        finally:
            await subscriber.stop()
            publisher.shutdown()
            context.destroy(linger=0)
            await runner.cleanup()
