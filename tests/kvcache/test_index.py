"""The KV index and the event streams that feed it: stores, evictions, restarts, gaps."""

from __future__ import annotations

import pytest

from deepfleet.kvcache.events import EventStreams, Verdict, decode
from deepfleet.kvcache.hashing import block_hashes
from deepfleet.kvcache.index import KvIndex
from tests.kvcache.events_util import BS, cleared, payload, removed, stored

PROMPT = list(range(100, 116))  # four blocks of four tokens
HASHES = block_hashes(PROMPT, BS)


def test_a_request_hashes_like_the_events_that_stored_its_blocks() -> None:
    index = KvIndex()
    # The engine reports the prompt in two events, the second chained to the first's last block.
    index.stored("a", [11, 12], None, PROMPT[:8], BS)
    index.stored("a", [13, 14], 12, PROMPT[8:], BS)
    assert index.match(HASHES) == {"a": 4}
    assert index.match(block_hashes([*PROMPT[:8], 7, 7, 7, 7], BS)) == {"a": 2}
    assert index.match(block_hashes([1, 2, 3, 4], BS)) == {}


def test_matches_are_leading_blocks_per_replica() -> None:
    index = KvIndex()
    index.stored("a", [1, 2, 3, 4], None, PROMPT, BS)
    index.stored("b", [9, 8], None, PROMPT[:8], BS)
    assert index.match(HASHES) == {"a": 4, "b": 2}
    assert len(index) == 4 and index.entries == 6


def test_eviction_events_remove_blocks() -> None:
    index = KvIndex()
    index.stored("a", [1, 2, 3, 4], None, PROMPT, BS)
    assert index.removed("a", [3]) == 1
    assert index.match(HASHES) == {"a": 2}  # block 3 gone: the prefix ends before it
    index.removed("a", [1, 2, 4])
    assert index.match(HASHES) == {} and len(index) == 0 and index.entries == 0


def test_a_block_held_twice_stays_until_both_copies_go() -> None:
    index = KvIndex()
    index.stored("a", [1], None, PROMPT[:4], BS)
    index.stored("a", [1], None, PROMPT[:4], BS)
    index.removed("a", [1])
    assert index.match(HASHES) == {"a": 1}
    index.removed("a", [1])
    assert index.match(HASHES) == {}


def test_blocks_after_an_unknown_parent_are_not_indexed() -> None:
    index = KvIndex()
    assert index.stored("a", [5, 6], 999, PROMPT[8:], BS) == 0
    assert index.orphans == 2 and len(index) == 0


def test_memory_is_bounded_least_recently_used_first() -> None:
    index = KvIndex(max_entries=6)
    index.stored("a", [1, 2, 3, 4], None, PROMPT, BS)
    index.match(HASHES[:1])  # touch the first block
    other = [900 + i for i in range(12)]
    index.stored("b", [21, 22, 23], None, other, BS)
    assert index.entries == 6
    assert index.match(HASHES) == {"a": 1}  # blocks 2.. were the oldest; block 1 was touched
    assert index.match(block_hashes(other, BS)) == {"b": 3}
    assert index.blocks_of("a") == 3  # its per-replica map shrank with the index


def test_all_blocks_cleared() -> None:
    streams = EventStreams(KvIndex())
    streams.receive("a", 0, payload(stored([1, 2, 3, 4], None, PROMPT)))
    streams.receive("b", 0, payload(stored([1, 2, 3, 4], None, PROMPT)))
    streams.receive("a", 1, payload(cleared()))
    assert streams.index.match(HASHES) == {"b": 4}


def test_an_engine_restart_clears_its_entries() -> None:
    streams = EventStreams(KvIndex())
    for seq in range(3):
        streams.receive(
            "a", seq, payload(stored([seq + 1], seq or None, PROMPT[4 * seq : 4 * seq + 4]))
        )
    assert streams.index.match(HASHES) == {"a": 3}
    # The engine came back: its publisher counts from 0 again.
    assert streams.receive("a", 0, payload(stored([50], None, PROMPT[:4]))) is Verdict.APPLIED
    assert streams.index.match(HASHES) == {"a": 1} and streams.stats.restarts == 1
    # ... or the fleet state says so (the context calls this on a new restart count).
    streams.restarted("a")
    assert streams.index.match(HASHES) == {}


def test_a_gap_triggers_a_resync_that_replays_the_missing_batches() -> None:
    streams = EventStreams(KvIndex())
    batches = [
        payload(stored([1], None, PROMPT[:4])),
        payload(stored([2], 1, PROMPT[4:8])),
        payload(stored([3], 2, PROMPT[8:12])),
        payload(stored([4], 3, PROMPT[12:])),
    ]
    assert streams.receive("a", 0, batches[0]) is Verdict.APPLIED
    assert streams.receive("a", 2, batches[2]) is Verdict.GAP  # batch 1 was lost
    assert streams.receive("a", 3, batches[3]) is Verdict.BUFFERED
    assert streams.index.match(HASHES) == {"a": 1}
    assert streams.resync_from("a") == 1
    for seq in (1, 2):  # the engine's replay buffer from the missing number on
        assert streams.replayed("a", seq, batches[seq])
    streams.resync_done("a")
    assert streams.index.match(HASHES) == {"a": 4} and streams.stats.gaps == 1
    assert streams.receive("a", 4, payload(removed(4))) is Verdict.APPLIED


def test_a_gap_without_replay_resets_the_replica() -> None:
    streams = EventStreams(KvIndex())
    streams.receive("a", 0, payload(stored([1, 2], None, PROMPT[:8])))
    assert streams.receive("a", 5, payload(stored([7], None, PROMPT[:4]))) is Verdict.GAP
    assert streams.replayed("a", 3, b"") is False  # the replay buffer no longer reaches 1
    streams.resync_reset("a")
    assert streams.index.match(HASHES) == {"a": 1}  # only what batch 5 stored
    assert streams.receive("a", 6, payload(removed(7))) is Verdict.APPLIED
    assert streams.index.match(HASHES) == {}


def test_first_batch_seen_late_is_a_gap() -> None:
    streams = EventStreams(KvIndex())
    assert streams.receive("a", 40, payload(cleared())) is Verdict.GAP
    assert streams.resync_from("a") == 0


def test_lag_is_measured_from_the_batch_timestamp() -> None:
    lags: list[float] = []
    streams = EventStreams(KvIndex(), clock=lambda: 100.25, on_lag=lags.append)
    streams.receive("a", 0, payload(cleared(), ts=100.0))
    assert lags == [pytest.approx(0.25)]


def test_decodes_vllms_own_encoding() -> None:
    vllm_events = pytest.importorskip("vllm.distributed.kv_events")
    import msgspec

    batch = vllm_events.KVEventBatch(
        ts=1.5,
        events=[
            vllm_events.BlockStored(
                block_hashes=[7, 8], parent_block_hash=None, token_ids=PROMPT[:8],
                block_size=4, lora_id=None, medium="GPU", lora_name=None,
                extra_keys=[None, None], group_idx=0, kv_cache_spec_kind="full_attention",
            ),
            vllm_events.BlockRemoved(block_hashes=[8], medium="GPU"),
            vllm_events.AllBlocksCleared(),
        ],
        data_parallel_rank=0,
    )  # fmt: skip
    ts, events, _ = decode(msgspec.msgpack.encode(batch))
    assert ts == 1.5 and [type(e).__name__ for e in events] == [
        "BlockStored", "BlockRemoved", "AllBlocksCleared"
    ]  # fmt: skip
    index = KvIndex()
    EventStreams(index).receive("a", 0, msgspec.msgpack.encode(batch))
    assert len(index) == 0  # stored, removed, cleared in order


def test_unknown_event_types_are_skipped() -> None:
    import msgspec

    raw = msgspec.msgpack.encode(
        [1.0, [{"type": "BlockMoved", "x": 1}, {"type": "AllBlocksCleared"}]]
    )
    assert [type(e).__name__ for e in decode(raw)[1]] == ["AllBlocksCleared"]


def test_sent_blocks_count_as_held_until_the_memory_expires() -> None:
    index = KvIndex()
    index.assume("a", HASHES, until=10.0, at=0.0)
    assert index.match(HASHES, now=1.0) == {"a": 4}  # its prefill has not ended yet
    assert index.match(HASHES) == {}  # without `now`: announced blocks only
    index.stored("a", [1, 2], None, PROMPT[:8], BS)
    index.removed("a", [1, 2])  # evicted, but the prefix was sent there: it stays its home
    assert index.match(HASHES, now=5.0) == {"a": 4}
    index.stored("a", [1, 2], None, PROMPT[:8], BS)
    assert index.match(HASHES, now=11.0) == {"a": 2}  # memory gone, announced blocks remain
    index.assume("b", HASHES[:1], until=20.0, at=0.0)
    index.cleared("b")
    assert index.match(HASHES, now=12.0) == {"a": 2}


def test_backlog_counts_sent_blocks_not_yet_stored() -> None:
    index = KvIndex()
    index.stored("a", [1], None, PROMPT[:4], BS)
    index.assume("a", HASHES, until=10.0, at=0.0)  # block 1 is already held: 3 to compute
    index.assume("a", HASHES, until=10.0, at=0.0)  # the same prompt again: no more work counted
    assert index.backlog("a", now=1.0) == 3
    index.stored("a", [2, 3], 1, PROMPT[4:12], BS)
    assert index.backlog("a", now=1.0) == 1
    index.removed("a", [2])
    index.assume("a", HASHES, until=12.0, at=0.0)  # block 2 was evicted: computed again
    assert index.backlog("a", now=1.0) == 2
    assert index.backlog("a", now=12.5) == 0


def test_a_clear_forgets_only_what_was_sent_before_its_batch() -> None:
    # The engine resets at 9 (idle, so everything sent before is computed and announced); its
    # AllBlocksCleared goes out with the batch of its next step, at 10. A prompt sent at 10.5
    # is computed after the reset: its blocks stay where they were sent, as backlog again.
    other = list(range(500, 516))
    streams = EventStreams(KvIndex())
    index = streams.index
    streams.receive("a", 0, payload(stored([1, 2, 3, 4], None, PROMPT), ts=1.0))
    index.assume("a", HASHES, until=100.0, at=0.5)
    index.assume("a", block_hashes(other, BS), until=100.0, at=8.0)
    index.assume("a", HASHES[:2], until=100.0, at=10.5)
    streams.receive("a", 1, payload(cleared(), ts=10.0))
    assert index.match(HASHES, now=11.0) == {"a": 2}
    assert index.match(block_hashes(other, BS), now=11.0) == {}
    assert index.backlog("a", now=11.0) == 2
    streams.receive("a", 2, payload(stored([7, 8], None, PROMPT[:8]), ts=12.0))
    assert index.backlog("a", now=12.0) == 0
    streams.restarted("a")  # a restart (or a resync) forgets everything
    assert index.match(HASHES, now=13.0) == {} and index.backlog("a", now=13.0) == 0
