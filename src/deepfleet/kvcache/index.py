"""The global KV index: which replicas hold which prefix blocks, learned from their KV events.

Blocks are keyed by our own chained hash (hashing.py), computed from the token ids each
BlockStored event carries, so a request's tokens hashed the same way find them. Each replica
also keeps a map from the engine's block hash to ours, because BlockRemoved and the parent of
a BlockStored name engine hashes. An engine may hold two copies of one block (two requests
computed it at once), so holdings are reference counted.

Memory is bounded: past `max_entries` (replica, block) pairs, the least recently stored or
matched block is forgotten on every replica. A forgotten block only costs a missed cache hit.

Pending blocks: a replica that was just sent a prompt will hold its blocks once its prefill
ends, but announces them only then (seconds, under load). Until then the router `assume`s
them for a while, so requests sharing that prefix follow the first one instead of computing
it again elsewhere; the BlockStored events confirm them, the time limit drops the rest.
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
        self._pending: dict[int, dict[str, float]] = {}  # ours -> replica -> until
        self._expiry: deque[tuple[float, int, str]] = deque()
        self._backlog: dict[str, int] = {}  # replica -> pending blocks

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
            holders = self._blocks.get(our_hash)
            if holders is None:
                holders = self._blocks[our_hash] = {}
            else:
                self._blocks.move_to_end(our_hash)
            if replica not in holders:
                self._entries += 1
                added += 1
            holders[replica] = engine_hash
            pending = self._pending.get(our_hash)
            if pending is not None and replica in pending:
                self._unpend(our_hash, replica)
        self._bound()
        return added

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

    def cleared(self, replica: str) -> int:
        """AllBlocksCleared, an engine restart or a resync: forget all the replica holds."""
        for block in [b for b, holders in self._pending.items() if replica in holders]:
            self._unpend(block, replica)
        r = self._replicas.pop(replica, None)
        if r is None:
            return 0
        gone = 0
        for held in r.held.values():
            gone += self._unlink(replica, held.ours)
        return gone

    # -- pending -----------------------------------------------------------------------------
    def assume(self, replica: str, hashes: Sequence[int], until: float) -> None:
        """`replica` will compute these blocks (those it does not hold yet): count them as
        held until `until`, or until its events say so. Bounded like stored blocks."""
        for block in hashes:
            holders = self._blocks.get(block)
            if holders is not None and replica in holders:
                continue
            pending = self._pending.setdefault(block, {})
            if replica not in pending:
                self._backlog[replica] = self._backlog.get(replica, 0) + 1
            pending[replica] = until
            self._expiry.append((until, block, replica))
        while len(self._expiry) > self.max_entries:
            self._drop_pending(*self._expiry.popleft())

    def backlog(self, replica: str, now: float) -> int:
        """Blocks the replica was sent and has not announced yet: its prefill work queued or
        in progress, as far as this router knows."""
        self.expire(now)
        return self._backlog.get(replica, 0)

    def expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            self._drop_pending(*self._expiry.popleft())

    def _drop_pending(self, until: float, block: int, replica: str) -> None:
        holders = self._pending.get(block)
        if holders is not None and holders.get(replica) == until:
            self._unpend(block, replica)

    def _unpend(self, block: int, replica: str) -> None:
        holders = self._pending[block]
        del holders[replica]
        if not holders:
            del self._pending[block]
        self._backlog[replica] -= 1

    # -- lookup ------------------------------------------------------------------------------
    def match(self, hashes: Sequence[int], now: float | None = None) -> dict[str, int]:
        """Per replica, how many leading blocks of `hashes` it holds, or (given `now`) is
        assumed to be computing; replicas with none are left out."""
        if now is not None:
            self.expire(now)
        depth: dict[str, int] = {}
        alive: set[str] | None = None
        for index, block in enumerate(hashes):
            holders = self._blocks.get(block)
            found = set(holders) if holders else set()
            if now is not None and block in self._pending:
                found.update(self._pending[block])
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
