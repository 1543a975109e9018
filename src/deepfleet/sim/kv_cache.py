"""A paged KV cache with prefix caching, modelled on vLLM's block pool (vllm/v1/core/block_pool.py).

- Blocks of `block_size` tokens; a sequence holds a block table.
- A full block gets the hash of its tokens chained to its parent's (block_hash.py) and stays
  findable by that hash after its sequences finish, until it is evicted.
- Free blocks form an LRU queue: never-used blocks first, then blocks in the order they were
  freed (a sequence frees its blocks tail first, so a prefix outlives its suffix). Evicting a
  hashed block removes its hash.
- Every change a router may care about becomes an event (Stored, Removed, Cleared), drained by
  the engine once per step and published in vLLM's format.
Blocks are created lazily, so a cache of millions of tokens costs nothing until used.
One simplification: when two sequences compute the same block at once, only the first copy is
findable by its hash (vLLM keeps both).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from deepfleet.sim.block_hash import chain_hashes, none_hash


@dataclass(frozen=True, slots=True)
class Stored:
    hashes: tuple[bytes, ...]
    parent: bytes | None
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Removed:
    hash: bytes


@dataclass(frozen=True, slots=True)
class Cleared:
    pass


KvEvent = Stored | Removed | Cleared


@dataclass(eq=False, slots=True)
class CacheSeq:
    """What the cache tracks per sequence."""

    block_table: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    cached_blocks: int = 0  # leading blocks of block_table that are hashed and findable


class KvCache:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("the KV cache needs at least one block of at least one token")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self._none = none_hash()
        self._fresh = 0  # blocks [self._fresh, num_blocks) were never used
        self._free: OrderedDict[int, None] = OrderedDict()  # LRU: evict from the front
        self._refs: dict[int, int] = {}
        self._block_hash: dict[int, bytes] = {}
        self._by_hash: dict[bytes, int] = {}
        self.events: list[KvEvent] = []
        self.queries = 0
        self.hits = 0

    # Capacity
    @property
    def free_blocks(self) -> int:
        return self.num_blocks - self._fresh + len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - self.free_blocks / self.num_blocks

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # Prefix lookup
    def hashes_of(self, token_ids: Sequence[int], known: Sequence[bytes] = ()) -> list[bytes]:
        return chain_hashes(token_ids, self.block_size, self._none, known)

    def admit(self, seq: CacheSeq, token_ids: Sequence[int]) -> int:
        """Attach the longest cached prefix to a new sequence; returns its length in tokens.

        As in vLLM, at least the last token is always computed, and the lookup counts
        len(token_ids) queried tokens and the hit length as hit tokens."""
        self.queries += len(token_ids)
        if not self.prefix_caching:
            return 0
        seq.hashes = self.hashes_of(token_ids, seq.hashes)
        limit = (len(token_ids) - 1) // self.block_size
        hit: list[int] = []
        for block_hash in seq.hashes[:limit]:
            block = self._by_hash.get(block_hash)
            if block is None:
                break
            hit.append(block)
        for block in hit:
            self._take(block)
        seq.block_table = hit
        seq.cached_blocks = len(hit)
        self.hits += len(hit) * self.block_size
        return len(hit) * self.block_size

    # Allocation
    def grow(self, seq: CacheSeq, tokens: int) -> bool:
        """Make the block table cover `tokens` tokens; False (and nothing taken) if the cache
        has too few free blocks."""
        needed = self.blocks_for(tokens) - len(seq.block_table)
        if needed <= 0:
            return True
        if needed > self.free_blocks:
            return False
        for _ in range(needed):
            seq.block_table.append(self._allocate())
        return True

    def _allocate(self) -> int:
        if self._fresh < self.num_blocks:
            block = self._fresh
            self._fresh += 1
        else:
            block, _ = self._free.popitem(last=False)
            self._forget(block)
        self._refs[block] = 1
        return block

    def _take(self, block: int) -> None:
        refs = self._refs.get(block, 0)
        if refs == 0:
            self._free.pop(block, None)
        self._refs[block] = refs + 1

    def _forget(self, block: int) -> None:
        old = self._block_hash.pop(block, None)
        if old is not None and self._by_hash.get(old) == block:
            del self._by_hash[old]
            self.events.append(Removed(old))

    def commit(self, seq: CacheSeq, token_ids: Sequence[int], computed: int) -> None:
        """Register the blocks that became full now that `computed` tokens have KV."""
        if not self.prefix_caching:
            return
        full = min(computed, len(token_ids)) // self.block_size
        if full <= seq.cached_blocks:
            return
        seq.hashes = self.hashes_of(token_ids[: full * self.block_size], seq.hashes[:full])
        start = seq.cached_blocks
        new = seq.hashes[start:full]
        for block, block_hash in zip(seq.block_table[start:full], new, strict=True):
            self._block_hash[block] = block_hash
            self._by_hash.setdefault(block_hash, block)
        parent = seq.hashes[start - 1] if start else None
        tokens = tuple(token_ids[start * self.block_size : full * self.block_size])
        self.events.append(Stored(tuple(new), parent, tokens))
        seq.cached_blocks = full

    def free(self, seq: CacheSeq) -> None:
        """Release a sequence's blocks, tail first, so the shared prefix is evicted last."""
        for block in reversed(seq.block_table):
            refs = self._refs[block] - 1
            self._refs[block] = refs
            if refs == 0:
                del self._refs[block]
                self._free[block] = None
        seq.block_table = []
        seq.cached_blocks = 0

    def reset(self) -> bool:
        """Drop every cached hash (vLLM's reset_prefix_cache); refused while blocks are in use."""
        if self._refs:
            return False
        self._block_hash.clear()
        self._by_hash.clear()
        self.events.append(Cleared())
        return True

    def drain_events(self) -> list[KvEvent]:
        events, self.events = self.events, []
        return events
