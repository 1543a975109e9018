from __future__ import annotations

from deepfleet.sim.kv_cache import CacheSeq, Cleared, KvCache, Removed, Stored


def fill(cache: KvCache, tokens: list[int]) -> CacheSeq:
    seq = CacheSeq()
    computed = cache.admit(seq, tokens)
    assert cache.grow(seq, len(tokens))
    cache.commit(seq, tokens, len(tokens))
    assert computed % cache.block_size == 0
    return seq


def test_second_request_hits_the_shared_prefix() -> None:
    cache = KvCache(num_blocks=16, block_size=4)
    first = fill(cache, list(range(10)))
    stored = cache.drain_events()
    assert [len(e.hashes) for e in stored if isinstance(e, Stored)] == [2]
    cache.free(first)
    seq = CacheSeq()
    hit = cache.admit(seq, [*range(8), 99, 98, 97])
    assert hit == 8
    assert (cache.queries, cache.hits) == (21, 8)


def test_the_last_token_is_always_computed() -> None:
    cache = KvCache(num_blocks=16, block_size=4)
    cache.free(fill(cache, list(range(8))))
    assert cache.admit(CacheSeq(), list(range(8))) == 4


def test_lru_eviction_removes_the_oldest_hash() -> None:
    cache = KvCache(num_blocks=2, block_size=2)
    cache.free(fill(cache, [1, 2, 3, 4]))
    cache.drain_events()
    seq = CacheSeq()
    assert cache.grow(seq, 2)
    events = cache.drain_events()
    assert len(events) == 1 and isinstance(events[0], Removed)
    assert cache.admit(CacheSeq(), [1, 2, 3, 4, 5]) == 2


def test_grow_refuses_without_taking_blocks() -> None:
    cache = KvCache(num_blocks=3, block_size=2)
    seq = CacheSeq()
    assert not cache.grow(seq, 7)
    assert seq.block_table == [] and cache.free_blocks == 3
    assert cache.grow(seq, 6)
    assert cache.usage == 1.0


def test_reset_clears_hashes_when_idle() -> None:
    cache = KvCache(num_blocks=4, block_size=2)
    seq = fill(cache, [1, 2, 3])
    assert not cache.reset()
    cache.free(seq)
    assert cache.reset()
    assert isinstance(cache.drain_events()[-1], Cleared)
    assert cache.admit(CacheSeq(), [1, 2, 3]) == 0
