"""Snapshots of a relay's KV index, so a gateway that subscribes late still knows every block.

KV events are deltas: vLLM announces a block once, when it is computed (BlockStored), and never
again while it stays cached, however often requests hit it. A gateway that subscribes after
the engines started (a second gateway instance, a restarted one, a uvicorn worker started
again) would never learn the prefixes the engines already hold, and would route them as if
they were cold. vLLM's own catch-up (a ROUTER replay endpoint with a buffer of the last
`buffer_steps` batches) covers only what that buffer still holds.

So the relay (relay.py), which subscribes to every engine from the fleet's start and applies
every batch to an index of its own, answers snapshot requests on a ROUTER socket beside its
PUB one: a subscriber sends the replica id, and gets back what the relay's index holds for
that replica with the sequence number of the next batch (`expected`). The subscriber installs
it (`EventStreams.restored`) and applies the live batches from `expected` on: since the relay
sends snapshots and batches from one thread, the snapshot is exactly the state after batch
`expected - 1`, and the subscriber's SUB socket delivers every batch from then on.

Wire: request [b"", replica id]; answer [b"", msgpack Snapshot].
"""

from __future__ import annotations

import msgspec

from deepfleet.kvcache.events import EventStreams
from deepfleet.kvcache.index import EngineHash


class Snapshot(msgspec.Struct, array_like=True, gc=False):
    expected: int | None
    """The sequence number of the next batch; None when the relay has seen none."""
    block_size: int | None
    held: list[tuple[EngineHash, int, int]]
    """(engine hash, our hash, copies), as KvIndex.holdings gives them."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def take(streams: EventStreams, replica: str) -> bytes:
    """The relay's side: what it knows of `replica`, encoded."""
    stream = streams.streams.get(replica)
    expected = None if stream is None else stream.expected
    index = streams.index
    return _encoder.encode(Snapshot(expected, index.block_size(replica), index.holdings(replica)))


def decode(payload: bytes) -> Snapshot:
    """Raises msgspec.DecodeError for bytes that are not a snapshot."""
    return _decoder.decode(payload)


def snapshot_endpoint(endpoint: str) -> str:
    """The relay's snapshot socket, beside its PUB `endpoint` (an ipc:// path ending in .ipc,
    or a tcp:// port, whose next port it takes)."""
    if endpoint.startswith("tcp://"):
        head, _, port = endpoint.rpartition(":")
        return f"{head}:{int(port) + 1}"
    base = endpoint.removesuffix(".ipc")
    return f"{base}-snapshot.ipc"
