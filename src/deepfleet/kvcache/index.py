"""The global KV index: which replicas hold which prefix blocks, learned from their KV events.

Blocks are keyed by our own chained hash (hashing.py), computed from the token ids each
BlockStored event carries, so a request's tokens hashed the same way find them. Each replica
also keeps a map from the engine's block hash to ours, because BlockRemoved and the parent of
a BlockStored name engine hashes. An engine may hold two copies of one block (two requests
computed it at once), so holdings are reference counted.

Memory is bounded: past `max_entries` (replica, block) pairs, the least recently stored or
matched block is forgotten on every replica. A forgotten block only costs a missed cache hit.

Sent blocks: a replica announces a prompt's blocks only when its prefill ends (seconds, under
load), and may evict them later while that conversation or prefix is still in use. So the
router remembers where it sent each prompt for a while (`assume`): those blocks count as held
there until the memory expires, which keeps a prefix's requests together while its first
prefill runs and after an eviction (the replica recomputes it once), as SGLang's router does
with its approximate tree. Sent blocks not yet announced are the replica's prefill backlog.

An AllBlocksCleared forgets only what was sent before it: an engine publishes the event with
its next step's batch, seconds after the reset, and the prompts sent meanwhile are computed
after the reset. Send times are on the engines' event clock (Unix time, the batch's `ts`);
a prompt sent between the reset and that batch's `ts` is forgotten too, unless the batch
announces its blocks.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from deepfleet.kvcache.hashing import chain_from

EngineHash = int | bytes  # vLLM publishes ints (the low 64 bits) unless told to send bytes


@dataclass(slots=True)
class _Held:
    ours: int
    refs: int = 1


@dataclass(slots=True)
class _Sent:
    until: float
    at: float  # the latest send, on the engines' event clock
    computing: bool  # sent and not announced yet: part of the replica's prefill backlog


@dataclass(slots=True)
class _Replica:
    held: dict[EngineHash, _Held] = field(default_factory=dict)  # engine hash -> our hash
    block_size: int | None = None


class KvIndex:
    def __init__(self, max_entries: int = 1_000_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        # our hash -> replica -> the engine's hash of that block
        self._blocks: OrderedDict[int, dict[str, EngineHash]] = OrderedDict()
        self._replicas: dict[str, _Replica] = {}
        self._entries = 0
        self.orphans = 0  # stored blocks whose parent was unknown, so not indexed
        self._sent: dict[int, dict[str, _Sent]] = {}  # ours -> replica -> memory
        self._expiry: deque[tuple[float, int, str]] = deque()
        self._backlog: dict[str, int] = {}  # replica -> sent blocks not announced yet

    # -- sizes -------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Distinct blocks known."""
        return len(self._blocks)

    @property
    def entries(self) -> int:
        """(replica, block) pairs held: what memory grows with."""
        return self._entries

    def blocks_of(self, replica: str) -> int:
        r = self._replicas.get(replica)
        return len(r.held) if r else 0

    def block_size(self, replica: str) -> int | None:
        r = self._replicas.get(replica)
        return r.block_size if r else None

    # -- events ------------------------------------------------------------------------------
    def stored(
        self,
        replica: str,
        engine_hashes: Sequence[EngineHash],
        parent: EngineHash | None,
        token_ids: Sequence[int],
        block_size: int,
    ) -> int:
        """Apply a BlockStored; returns the blocks added to the index."""
        r = self._replicas.setdefault(replica, _Replica())
        r.block_size = block_size
        if parent is None:
            parent_ours = None
        else:
            held = r.held.get(parent)
            if held is None:
                self.orphans += len(engine_hashes)
                return 0
            parent_ours = held.ours
        ours = chain_from(parent_ours, token_ids, block_size)
        added = 0
        for engine_hash, our_hash in zip(engine_hashes, ours, strict=False):
            held = r.held.get(engine_hash)
            if held is not None and held.ours == our_hash:
                held.refs += 1
                continue
            if held is not None:  # the engine reused a hash for other tokens: trust the new one
                self._drop(replica, engine_hash, held.ours)
            r.held[engine_hash] = _Held(our_hash)
            added += self._link(replica, engine_hash, our_hash)
        self._bound()
        return added

    def _link(self, replica: str, engine_hash: EngineHash, ours: int) -> bool:
        """The replica holds block `ours` (the most recent block for eviction); a block sent
        there and still computing is computed. True when the pair is new."""
        holders = self._blocks.get(ours)
        if holders is None:
            holders = self._blocks[ours] = {}
        else:
            self._blocks.move_to_end(ours)
        new = replica not in holders
        if new:
            self._entries += 1
        holders[replica] = engine_hash
        sent = self._sent.get(ours, {}).get(replica)
        if sent is not None and sent.computing:
            sent.computing = False
            self._backlog[replica] -= 1
        return new

    def removed(self, replica: str, engine_hashes: Sequence[EngineHash]) -> int:
        """Apply a BlockRemoved; returns the blocks the replica no longer holds."""
        r = self._replicas.get(replica)
        if r is None:
            return 0
        gone = 0
        for engine_hash in engine_hashes:
            held = r.held.get(engine_hash)
            if held is None:
                continue
            held.refs -= 1
            if held.refs <= 0:
                del r.held[engine_hash]
                gone += self._unlink(replica, held.ours)
        return gone

    def cleared(self, replica: str, before: float | None = None) -> int:
        """Forget all the replica holds: an engine restart or a resync (`before` None), or an
        AllBlocksCleared published at `before` (its batch's `ts`). Then the blocks sent to the
        replica since are kept: it computes them after the reset, so they are its backlog
        until it announces them again."""
        r = self._replicas.pop(replica, None)
        for block, memory in list(self._sent.items()):
            sent = memory.get(replica)
            if sent is None:
                continue
            if before is None or sent.at < before:
                self._forget_sent(block, replica)
            elif not sent.computing:
                sent.computing = True
                self._backlog[replica] = self._backlog.get(replica, 0) + 1
        if r is None:
            return 0
        gone = 0
        for held in r.held.values():
            gone += self._unlink(replica, held.ours)
        return gone

    # -- snapshots (kvcache/snapshot.py) ---------------------------------------------------
    def holdings(self, replica: str) -> list[tuple[EngineHash, int, int]]:
        """What the replica holds, as (engine hash, our hash, copies): a relay's snapshot."""
        r = self._replicas.get(replica)
        return [(e, h.ours, h.refs) for e, h in r.held.items()] if r else []

    def restore(
        self, replica: str, block_size: int | None, held: Sequence[tuple[EngineHash, int, int]]
    ) -> None:
        """Replace what the replica holds with a snapshot's `held`; unlike `cleared`, the
        prompts this router sent there stay remembered (the snapshot is not a reset)."""
        old = self._replicas.pop(replica, None)
        if old is not None:
            for h in old.held.values():
                self._unlink(replica, h.ours)
        r = self._replicas[replica] = _Replica(block_size=block_size)
        for engine_hash, ours, refs in held:
            r.held[engine_hash] = _Held(ours, max(1, refs))
            self._link(replica, engine_hash, ours)
        self._bound()

    # -- sent -------------------------------------------------------------------------------
    def assume(self, replica: str, hashes: Sequence[int], until: float, at: float) -> None:
        """The router sent a prompt with these blocks to `replica` at `at` (Unix time, the
        clock of the events' `ts`): count them as held there until `until` (the clock of
        `now` in `match` and `backlog`). Bounded like stored blocks."""
        for block in hashes:
            holders = self._blocks.get(block)
            held = holders is not None and replica in holders
            sent = self._sent.setdefault(block, {}).get(replica)
            if sent is None:
                self._sent[block][replica] = sent = _Sent(until, at, computing=False)
            sent.until, sent.at = until, at
            if not held and not sent.computing:
                sent.computing = True
                self._backlog[replica] = self._backlog.get(replica, 0) + 1
            self._expiry.append((until, block, replica))
        while len(self._expiry) > self.max_entries:
            self._expire_one(*self._expiry.popleft())

    def backlog(self, replica: str, now: float) -> int:
        """Blocks the replica was sent and has not announced yet: its prefill work queued or
        in progress, as far as this router knows."""
        self.expire(now)
        return self._backlog.get(replica, 0)

    def expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            self._expire_one(*self._expiry.popleft())

    def _expire_one(self, until: float, block: int, replica: str) -> None:
        sent = self._sent.get(block, {}).get(replica)
        if sent is not None and sent.until == until:  # not refreshed since
            self._forget_sent(block, replica)

    def _forget_sent(self, block: int, replica: str) -> None:
        memory = self._sent[block]
        if memory.pop(replica).computing:
            self._backlog[replica] -= 1
        if not memory:
            del self._sent[block]

    # -- lookup ------------------------------------------------------------------------------
    def match(self, hashes: Sequence[int], now: float | None = None) -> dict[str, int]:
        """Per replica, how many leading blocks of `hashes` it holds, or (given `now`) was
        recently sent; replicas with none are left out."""
        if now is not None:
            self.expire(now)
        depth: dict[str, int] = {}
        alive: set[str] | None = None
        for index, block in enumerate(hashes):
            holders = self._blocks.get(block)
            found = set(holders) if holders else set()
            if now is not None and block in self._sent:
                found.update(self._sent[block])
            alive = found if alive is None else alive & found
            if not alive:
                break
            if holders:
                self._blocks.move_to_end(block)
            for replica in alive:
                depth[replica] = index + 1
        return depth

    # -- internals ---------------------------------------------------------------------------
    def _unlink(self, replica: str, ours: int) -> int:
        holders = self._blocks.get(ours)
        if holders is None or replica not in holders:
            return 0
        del holders[replica]
        self._entries -= 1
        if not holders:
            del self._blocks[ours]
        return 1

    def _drop(self, replica: str, engine_hash: EngineHash, ours: int) -> None:
        del self._replicas[replica].held[engine_hash]
        self._unlink(replica, ours)

    def _bound(self) -> None:
        while self._entries > self.max_entries and self._blocks:
            _, holders = self._blocks.popitem(last=False)
            for replica, engine_hash in holders.items():
                self._entries -= 1
                r = self._replicas.get(replica)
                if r is not None:
                    r.held.pop(engine_hash, None)
