"""Attack: one malformed KV event message (`block_size: 0`, garbage bytes) sent to the events
port stops KV routing for good. Now every message is validated, bad ones are dropped and
counted, and a reader that dies anyway is started again."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from deepfleet.fleet.ports import free_port
from deepfleet.kvcache.events import EventStreams
from deepfleet.kvcache.hashing import block_hashes
from deepfleet.kvcache.index import KvIndex
from deepfleet.kvcache.subscriber import EventSubscriber, Publisher, Resyncer
from tests.kvcache.events_util import BS, payload, stored, until

TOKENS = [11, 12, 13, 14, 21, 22, 23, 24]


def poisoned() -> bytes:
    event = {
        "type": "BlockStored", "block_hashes": [1], "parent_block_hash": None,
        "token_ids": [1, 2, 3, 4], "block_size": 0,
    }  # fmt: skip
    return msgspec.msgpack.encode([0.0, [event], 0])


async def _subscribed(
    streams: EventStreams,
) -> tuple[EventSubscriber, zmq.asyncio.Context, zmq.asyncio.Socket]:
    port = free_port()
    context = zmq.asyncio.Context()
    resyncer = Resyncer(streams, lambda: None, context)  # type: ignore[arg-type,return-value]
    subscriber = EventSubscriber(streams, resyncer, context)
    subscriber.set_publishers([Publisher("r", f"tcp://127.0.0.1:{port}", "http://127.0.0.1:9")])
    pub = context.socket(zmq.PUB)
    pub.connect(f"tcp://127.0.0.1:{port}")
    await asyncio.sleep(0.3)  # the slow joiner
    return subscriber, context, pub


async def _send(pub: zmq.asyncio.Socket, seq: int, body: bytes) -> None:
    await pub.send_multipart([b"kv-events", seq.to_bytes(8, "big"), body])


async def test_a_zero_block_size_is_dropped_and_routing_goes_on() -> None:
    index = KvIndex()
    invalid: list[tuple[str, int]] = []
    streams = EventStreams(index, on_invalid=lambda r, n: invalid.append((r, n)))
    subscriber, context, pub = await _subscribed(streams)
    try:
        await _send(pub, 0, poisoned())
        await _send(pub, 1, b"\xc1 not msgpack")
        await _send(pub, 2, payload(stored([7, 8], None, TOKENS)))
        await until(lambda: index.match(block_hashes(TOKENS, BS)) == {"r": 2})
        assert streams.stats.invalid == 2 and invalid == [("r", 1), ("r", 1)]
    finally:
        await subscriber.stop()
        pub.close(linger=0)
        context.destroy(linger=0)


async def test_a_reader_that_dies_is_started_again() -> None:
    index = KvIndex()
    streams = EventStreams(index)
    real = streams.receive
    calls: list[int] = []

    def flaky(replica: str, seq: int, body: bytes) -> Any:
        calls.append(seq)
        if len(calls) == 1:
            raise RuntimeError("a bug in the reader")
        return real(replica, seq, body)

    streams.receive = flaky  # type: ignore[method-assign]
    subscriber, context, pub = await _subscribed(streams)
    try:
        await _send(pub, 0, payload(stored([7], None, TOKENS[:4])))
        await until(lambda: subscriber.reader_restarts == 1)
        await asyncio.sleep(0.5)  # the publisher reconnects to the new socket
        await _send(pub, 0, payload(stored([7, 8], None, TOKENS)))
        await until(lambda: index.match(block_hashes(TOKENS, BS)) == {"r": 2})
    finally:
        await subscriber.stop()
        pub.close(linger=0)
        context.destroy(linger=0)
