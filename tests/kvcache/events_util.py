"""Build KV event payloads in vLLM's wire format with the simulator's encoder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import msgspec

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
