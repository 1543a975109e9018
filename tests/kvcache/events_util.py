"""Build KV event payloads in vLLM's wire format with the simulator's encoder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import zmq

from deepfleet.sim.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch

BS = 4


def stored(hashes: Sequence[int], parent: int | None, tokens: Sequence[int]) -> BlockStored:
    return BlockStored(
        block_hashes=list(hashes),
        parent_block_hash=parent,
        token_ids=list(tokens),
        block_size=BS,
        lora_id=None,
        medium="GPU",
        lora_name=None,
    )


def removed(*hashes: int) -> BlockRemoved:
    return BlockRemoved(block_hashes=list(hashes), medium="GPU")


def cleared() -> AllBlocksCleared:
    return AllBlocksCleared()


def payload(*events: BlockStored | BlockRemoved | AllBlocksCleared, ts: float = 0.0) -> bytes:
    return msgspec.msgpack.encode(KVEventBatch(ts=ts, events=list(events), data_parallel_rank=0))


async def until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait for `check()` to hold (events travel asynchronously)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class IpcEngine:
    """A publisher in vLLM's wire format on a Unix socket it binds, as a local engine does."""

    def __init__(self, path: Path) -> None:
        self.endpoint = f"ipc://{path}"
        self.context: zmq.Context[Any] = zmq.Context()
        self.sock = self.context.socket(zmq.PUB)
        self.sock.bind(self.endpoint)
        self.seq = 0

    def publish(self, *events: BlockStored | BlockRemoved | AllBlocksCleared) -> None:
        self.sock.send_multipart([b"kv-events", self.seq.to_bytes(8, "big"), payload(*events)])
        self.seq += 1

    def close(self) -> None:
        self.sock.close(linger=0)
        self.context.term()
