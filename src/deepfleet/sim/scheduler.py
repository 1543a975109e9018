"""Continuous batching as vLLM v1 schedules it, without the model.

Every step has a token budget (max_num_batched_tokens). Running sequences go first: a decode
takes one token, a sequence still in prefill takes the rest of its prompt up to the budget
(chunked prefill). Then waiting sequences are admitted in arrival order while the budget, the
max_num_seqs limit and the KV cache allow; admission looks up the cached prefix. The blocks a
step will fill are findable from the moment they are allocated (vLLM's allocate_slots caches
them before the forward pass), so a prompt that arrives with its twin is not computed twice.
When a running sequence cannot grow, the most recently admitted one is preempted (its blocks
freed, to be recomputed later), as vLLM does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from deepfleet.sim.kv_cache import CacheSeq, KvCache
from deepfleet.sim.output import OutputPlan


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    plan: OutputPlan
    arrival: float
    output_ids: list[int] = field(default_factory=list)
    computed: int = 0
    cached_prompt: int = 0
    preemptions: int = 0
    cache: CacheSeq = field(default_factory=CacheSeq)
    admitted: bool = False
    finished: bool = False
    aborted: bool = False

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids if self.output_ids else self.prompt_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def in_prefill(self) -> bool:
        return self.computed < len(self.prompt_ids)


@dataclass(frozen=True, slots=True)
class Scheduled:
    seq: Sequence
    tokens: int
    decode: bool


@dataclass(frozen=True, slots=True)
class Batch:
    items: tuple[Scheduled, ...]
    decode_seqs: int
    context_tokens: int
    prefill_tokens: int


class Scheduler:
    def __init__(self, cache: KvCache, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.cache = cache
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence whose client went away."""
        seq.aborted = True
        if seq in self.running:
            self.running.remove(seq)
            self.cache.free(seq.cache)
        elif seq in self.waiting:
            self.waiting.remove(seq)
            if seq.admitted:
                self.cache.free(seq.cache)

    def schedule(self) -> Batch:
        budget = self.max_num_batched_tokens
        items: list[Scheduled] = []
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            want = min(seq.num_tokens - seq.computed, budget)
            if want <= 0:
                index += 1
                continue
            while not self.cache.grow(seq.cache, seq.computed + want):
                victim = self.running.pop()
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self._cache_full_blocks(seq, want)
                items.append(Scheduled(seq, want, not seq.in_prefill))
                budget -= want
                index += 1
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not seq.admitted:
                seq.computed = self.cache.admit(seq.cache, seq.token_ids)
                seq.cached_prompt = seq.cached_prompt or seq.computed
                seq.admitted = True
            want = min(seq.num_tokens - seq.computed, budget)
            if not self.cache.grow(seq.cache, seq.computed + want):
                break
            self.waiting.popleft()
            self.running.append(seq)
            self._cache_full_blocks(seq, want)
            items.append(Scheduled(seq, want, False))
            budget -= want
        decodes = [s for s in items if s.decode]
        return Batch(
            items=tuple(items),
            decode_seqs=len(decodes),
            context_tokens=sum(s.seq.computed for s in decodes),
            prefill_tokens=sum(s.tokens for s in items if not s.decode),
        )

    def _cache_full_blocks(self, seq: Sequence, tokens: int) -> None:
        """Register the blocks this step fills as soon as they are allocated, as vLLM's
        allocate_slots does (before the forward pass): a request admitted later in the same
        step, or in the next one, finds them instead of computing the prefix again."""
        self.cache.commit(seq.cache, seq.token_ids, seq.computed + tokens)

    def _preempt(self, seq: Sequence) -> None:
        self.cache.free(seq.cache)
        seq.computed = 0
        seq.admitted = False
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def complete(self, batch: Batch) -> list[Sequence]:
        """Apply a finished step: KV computed, one new token for each sequence whose tokens
        are all computed, finished sequences released. Returns the sequences that got a token."""
        produced = []
        for item in batch.items:
            seq = item.seq
            if seq.aborted or seq.computed + item.tokens > seq.num_tokens:
                continue
            seq.computed += item.tokens
            if seq.computed == seq.num_tokens:
                produced.append(seq)
        return produced

    def finish(self, seq: Sequence) -> None:
        seq.finished = True
        if seq in self.running:
            self.running.remove(seq)
        self.cache.free(seq.cache)
