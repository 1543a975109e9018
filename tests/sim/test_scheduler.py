"""The simulator's scheduler caches the blocks a step fills when it allocates them, as vLLM's
allocate_slots does: a prompt that arrives with its twin is not computed twice."""

from __future__ import annotations

from deepfleet.sim.kv_cache import KvCache, Stored
from deepfleet.sim.output import OutputPlan
from deepfleet.sim.scheduler import Scheduler, Sequence

PLAN = OutputPlan(length=4, finish_reason="length", offset=0, reasoning_tokens=0)


def seq(name: str, prompt: list[int]) -> Sequence:
    return Sequence(name, prompt, PLAN, arrival=0.0)


def test_twins_in_one_step_compute_the_prefix_once() -> None:
    cache = KvCache(num_blocks=64, block_size=4)
    scheduler = Scheduler(cache, max_num_seqs=8, max_num_batched_tokens=1000)
    prompt = list(range(41))  # 10 full blocks and one token
    first, second = seq("a", prompt), seq("b", [*prompt[:40], 7, 8])
    scheduler.add(first)
    scheduler.add(second)
    batch = scheduler.schedule()
    # The second finds the 10 blocks the first is filling in this very step.
    assert [(s.seq.request_id, s.tokens) for s in batch.items] == [("a", 41), ("b", 2)]
    assert batch.prefill_tokens == 43
    assert cache.hits == 40
    stored = [e for e in cache.drain_events() if isinstance(e, Stored)]
    assert [len(e.hashes) for e in stored] == [10]  # announced once, by the first
    produced = scheduler.complete(batch)
    assert produced == [first, second]
    assert (first.computed, second.computed) == (41, 42)


def test_a_chunked_prefill_announces_each_chunk_when_scheduled() -> None:
    cache = KvCache(num_blocks=64, block_size=4)
    scheduler = Scheduler(cache, max_num_seqs=8, max_num_batched_tokens=16)
    scheduler.add(seq("a", list(range(40))))
    first = scheduler.schedule()
    assert [s.tokens for s in first.items] == [16]
    assert [len(e.hashes) for e in cache.drain_events() if isinstance(e, Stored)] == [4]
    assert scheduler.complete(first) == []  # still in prefill
    second = scheduler.schedule()
    assert [s.tokens for s in second.items] == [16]
    assert [len(e.hashes) for e in cache.drain_events() if isinstance(e, Stored)] == [4]
