"""vLLM's KV cache events (vllm/distributed/kv_events.py, vLLM 0.32) decoded with msgspec, and
the per-replica stream bookkeeping that keeps the index in step with each engine.

Wire format: multipart [topic, sequence (8 bytes, big-endian), msgpack(KVEventBatch)]; a batch
is an array [ts, events, data_parallel_rank]; each event is a map tagged by `type`. Only the
fields routing needs are declared (msgspec skips the others), and an event type this module
does not know is skipped, so newer engines stay readable.

Every message is validated before it touches the index (the events port is a network input):
a batch that does not decode, or an event of a known type whose fields break the constraints
below (a `block_size` of 0 would divide by zero in the index), is dropped and counted
(`StreamStats.invalid`, and `on_invalid` for the Prometheus counter); the stream goes on.

Sequence numbers count batches from 0 per publisher. A number beyond the expected one is a gap
(lost batches): the stream asks for a resync. A number below it means the publisher started
again (engine restart): the replica's entries are dropped and counting starts over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any

import msgspec

from deepfleet.kvcache.index import EngineHash, KvIndex

END_SEQ = -1  # the replay endpoint's end-of-replay marker
MAX_BLOCK_SIZE = 1 << 16  # vLLM's block sizes are 1..256 tokens; far larger is not an engine

BlockSize = Annotated[int, msgspec.Meta(ge=1, le=MAX_BLOCK_SIZE)]
TokenId = Annotated[int, msgspec.Meta(ge=0)]


class EventBatch(msgspec.Struct, array_like=True, gc=False):
    ts: float
    events: list[msgspec.Raw]
    data_parallel_rank: int | None = None


class BlockStored(msgspec.Struct, tag=True, gc=False):
    block_hashes: list[EngineHash]
    parent_block_hash: EngineHash | None
    token_ids: list[TokenId]
    block_size: BlockSize
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None


class BlockRemoved(msgspec.Struct, tag=True, gc=False):
    block_hashes: list[EngineHash]
    medium: str | None = None


class AllBlocksCleared(msgspec.Struct, tag=True, gc=False):
    pass


class _Tagged(msgspec.Struct, gc=False):
    type: str = ""


Event = BlockStored | BlockRemoved | AllBlocksCleared
KNOWN_TYPES = frozenset({"BlockStored", "BlockRemoved", "AllBlocksCleared"})
_batch = msgspec.msgpack.Decoder(EventBatch)
_event = msgspec.msgpack.Decoder(Event)
_tag = msgspec.msgpack.Decoder(_Tagged)


def decode(payload: bytes) -> tuple[float, list[Event], int]:
    """A batch's timestamp, its valid events of known types, and how many events of known
    types were invalid. Raises msgspec.DecodeError for a batch that is not one."""
    batch = _batch.decode(payload)
    events: list[Event] = []
    invalid = 0
    for raw in batch.events:
        try:
            events.append(_event.decode(raw))
        except msgspec.DecodeError:
            invalid += _is_known(raw)  # else an event type newer than this reader
    return batch.ts, events, invalid


def _is_known(raw: msgspec.Raw) -> bool:
    try:
        return _tag.decode(raw).type in KNOWN_TYPES
    except msgspec.DecodeError:
        return True  # not even a tagged map


def seq_of(frame: bytes) -> int:
    return int.from_bytes(frame, "big", signed=True)


class Verdict(Enum):
    APPLIED = "applied"
    GAP = "gap"  # batches were lost: resync before applying more
    BUFFERED = "buffered"  # held while a resync runs


@dataclass
class Stream:
    """One replica's event stream."""

    replica: str
    expected: int | None = None  # next sequence number; None until the first batch
    resyncing: bool = False
    held: list[tuple[int, bytes]] = field(default_factory=list)
    last_ts: float = 0.0


@dataclass
class StreamStats:
    batches: int = 0
    events: int = 0
    gaps: int = 0
    restarts: int = 0
    skipped: int = 0  # blocks with LoRA or extra keys: not matchable from tokens alone
    invalid: int = 0  # batches that did not decode and events that broke the constraints


class EventStreams:
    """Applies batches to the index in order, per replica. Pure bookkeeping: the subscriber
    does the I/O and acts on GAP by calling `resync_*`."""

    def __init__(
        self,
        index: KvIndex,
        clock: Callable[[], float] = time.time,
        on_lag: Callable[[float], None] | None = None,
        on_invalid: Callable[[str, int], None] | None = None,
    ) -> None:
        self.index = index
        self.streams: dict[str, Stream] = {}
        self.stats = StreamStats()
        self._clock = clock
        self._on_lag = on_lag
        self._on_invalid = on_invalid

    def stream(self, replica: str) -> Stream:
        s = self.streams.get(replica)
        if s is None:
            s = self.streams[replica] = Stream(replica)
        return s

    def receive(self, replica: str, seq: int, payload: bytes) -> Verdict:
        """A live batch."""
        s = self.stream(replica)
        if s.resyncing:
            s.held.append((seq, payload))
            return Verdict.BUFFERED
        if s.expected is not None and seq < s.expected:
            # A live PUB stream never repeats itself: a new publisher counts from 0 again.
            self.restarted(replica)
            s = self.streams[replica]
        if seq != (s.expected or 0):
            self.stats.gaps += 1
            s.resyncing = True
            s.held.append((seq, payload))
            return Verdict.GAP
        self._apply(s, seq, payload)
        return Verdict.APPLIED

    def restarted(self, replica: str) -> None:
        """The engine started again (its cache is empty): forget what it held."""
        self.stats.restarts += 1
        self.index.cleared(replica)
        self.streams[replica] = Stream(replica)

    def forget(self, replica: str) -> None:
        self.index.cleared(replica)
        self.streams.pop(replica, None)

    # -- resync ------------------------------------------------------------------------------
    def resync_from(self, replica: str) -> int:
        """The first sequence number a replay must deliver (0 for a stream never seen)."""
        return self.stream(replica).expected or 0

    def replayed(self, replica: str, seq: int, payload: bytes) -> bool:
        """A batch from the engine's replay buffer; False if the replay cannot close the gap
        (its oldest batch is newer than the one missing)."""
        s = self.stream(replica)
        expected = s.expected or 0
        if seq < expected:
            return True
        if seq > expected:
            return False
        self._apply(s, seq, payload)
        return True

    def begin_resync(self, replica: str) -> None:
        """Hold the live batches until a resync ends (a subscriber asking its relay for a
        snapshot before the first batch: kvcache/snapshot.py)."""
        self.stream(replica).resyncing = True

    def restored(
        self,
        replica: str,
        expected: int | None,
        block_size: int | None,
        held: Sequence[tuple[EngineHash, int, int]],
    ) -> None:
        """A relay's snapshot: the replica holds `held` as of the batch before `expected`;
        then apply the live batches held meanwhile from `expected` on."""
        self.index.restore(replica, block_size, held)
        s = self.stream(replica)
        s.expected = expected
        self.resync_done(replica)

    def resync_done(self, replica: str) -> None:
        """Replay finished: apply the live batches held meanwhile that it did not cover."""
        s = self.stream(replica)
        s.resyncing = False
        held, s.held = s.held, []
        for seq, payload in sorted(held, key=lambda item: item[0]):
            if s.expected is not None and seq < s.expected:
                continue
            if seq == (s.expected or 0):
                self._apply(s, seq, payload)
            else:  # still a hole: start over from this batch
                self._restart_at(s, seq, payload)

    def resync_reset(self, replica: str) -> None:
        """No replay: forget the replica's blocks (the engine was asked to drop its prefix
        cache, or will announce what it stores from now on) and continue from the newest
        batch held."""
        s = self.stream(replica)
        held = sorted(s.held, key=lambda item: item[0])
        self.index.cleared(replica)
        fresh = self.streams[replica] = Stream(replica)
        if held:
            first_seq, first_payload = held[0]
            self._restart_at(fresh, first_seq, first_payload)
            for seq, payload in held[1:]:
                if seq == fresh.expected:
                    self._apply(fresh, seq, payload)

    # -- internals ---------------------------------------------------------------------------
    def _restart_at(self, s: Stream, seq: int, payload: bytes) -> None:
        s.expected = seq
        self._apply(s, seq, payload)

    def _apply(self, s: Stream, seq: int, payload: bytes) -> None:
        s.expected = seq + 1
        try:
            ts, events, invalid = decode(payload)
        except msgspec.DecodeError:
            self._invalid(s.replica, 1)
            return
        if invalid:
            self._invalid(s.replica, invalid)
        s.last_ts = ts
        self.stats.batches += 1
        self.stats.events += len(events)
        if self._on_lag is not None:
            self._on_lag(max(0.0, self._clock() - ts))
        index = self.index
        for event in events:
            if isinstance(event, BlockStored):
                if event.lora_name or event.lora_id or _has_extra_keys(event):
                    self.stats.skipped += len(event.block_hashes)
                    continue
                index.stored(
                    s.replica,
                    event.block_hashes,
                    event.parent_block_hash,
                    event.token_ids,
                    event.block_size,
                )
            elif isinstance(event, BlockRemoved):
                index.removed(s.replica, event.block_hashes)
            else:  # keeps what was sent after the batch's time
                index.cleared(s.replica, before=ts)

    def _invalid(self, replica: str, count: int) -> None:
        self.stats.invalid += count
        if self._on_invalid is not None:
            self._on_invalid(replica, count)


def _has_extra_keys(event: BlockStored) -> bool:
    return bool(event.extra_keys) and any(k for k in event.extra_keys or ())
