"""KV cache events in vLLM's wire format (vllm/distributed/kv_events.py, vLLM 0.32).

Each engine step with cache changes publishes one multipart ZMQ message
[topic, sequence (8 bytes, big-endian), msgpack(KVEventBatch)] on a PUB socket. The batch is
an array [ts, events, data_parallel_rank]; each event is a map tagged by `type` (BlockStored,
BlockRemoved, AllBlocksCleared). Block hashes are vLLM's int form (the low 64 bits).

As in vLLM, an endpoint with `*` (or ipc/inproc) is bound; a concrete host is connected to, so
the subscriber binds it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import count
from typing import Any

import msgspec
import zmq

from deepfleet.sim.block_hash import external
from deepfleet.sim.kv_cache import Cleared, KvEvent, Removed, Stored


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    """Base of the events; `tag=True` writes the class name as `type`."""


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None
    locality: str | None = None
    ownership: str | None = None
    session_id: str | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None
    locality: str | None = None
    ownership: str | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]


def to_wire(event: KvEvent, block_size: int) -> BlockStored | BlockRemoved | AllBlocksCleared:
    if isinstance(event, Stored):
        return BlockStored(
            block_hashes=[external(h) for h in event.hashes],
            parent_block_hash=None if event.parent is None else external(event.parent),
            token_ids=list(event.token_ids),
            block_size=block_size,
            lora_id=None,
            medium="GPU",
            lora_name=None,
            extra_keys=[None] * len(event.hashes),
            group_idx=0,
            kv_cache_spec_kind="full_attention",
        )
    if isinstance(event, Removed):
        return BlockRemoved(block_hashes=[external(event.hash)], medium="GPU", group_idx=0)
    assert isinstance(event, Cleared)
    return AllBlocksCleared()


def is_bind_endpoint(endpoint: str) -> bool:
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


class ZmqPublisher:
    """Publishes batches from the engine loop (PUB sends never block)."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, topic: str = "") -> None:
        self.endpoint = endpoint
        self._socket = context.socket(zmq.PUB)
        self._socket.set_hwm(100_000)
        self._socket.setsockopt(zmq.LINGER, 0)
        if is_bind_endpoint(endpoint):
            self._socket.bind(endpoint)
        else:
            self._socket.connect(endpoint)
        self._topic = topic.encode()
        self._sequence = count()
        self._encoder = msgspec.msgpack.Encoder()

    def publish(self, events: Sequence[KvEvent], block_size: int) -> None:
        if not events:
            return
        batch = KVEventBatch(
            ts=time.time(), events=[to_wire(e, block_size) for e in events], data_parallel_rank=0
        )
        seq = next(self._sequence).to_bytes(8, "big")
        self._socket.send_multipart((self._topic, seq, self._encoder.encode(batch)), copy=False)

    def close(self) -> None:
        self._socket.close(linger=0)
