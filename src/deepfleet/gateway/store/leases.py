"""A gateway's leases on shared budgets: what it may spend without asking the database.

A key's bucket (requests/min or tokens/min) and its concurrent slots live in PostgreSQL. A
round trip per request costs more than the gateway's whole per-request budget on a busy host
(measured in benchmarks/ha/overhead.py: each trip waits for the database process to be
scheduled), so a gateway takes a lease: a batch of tokens (or slots) moved out of the shared
bucket in one transaction, spent locally with no I/O, and refilled when it runs out.

How exact that is:
- Never over the limit: a token is spent once, where it was leased; the bucket refills at the
  key's rate whoever holds its tokens.
- Under it by at most what the other gateways hold unspent: a lease is `share` of the key's
  per-minute budget (default 1/60: one second of refill), and a balance idle for `idle_s` is
  given back. A SIGKILLed gateway's unspent lease is lost: at most one second of one key's
  budget. A busy key near its limit gets leases of what refilled since the last one (about one
  request's worth), so there it costs one round trip per admitted request.
- Refusals are remembered: when the bucket was short, the gateway refuses locally until the
  refill could cover the request (at most `recheck_s`), instead of a round trip per refusal.
- Token settlements (a request's reservation against its real usage) and released slots
  change only the local balance; the balance goes back with the next idle give-back.

This module is the bookkeeping only (no I/O, a clock handed in); postgres_limits.py moves the
leases to and from the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SHARE = 1 / 60  # a lease: this share of the per-minute budget (one second of refill)
IDLE_S = 0.5  # a balance unused this long goes back to the shared bucket
RECHECK_S = 0.5  # longest local refusal before asking the database again


@dataclass
class Balance:
    """One key's budget of one kind, held by this gateway."""

    held: float = 0.0  # leased and unspent (negative: spent more than leased, a debt)
    short_until: float = 0.0  # the shared bucket was short: refuse locally until then
    retry_after_s: float = 1.0  # what that refusal tells the client
    used_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Slots:
    """One key's concurrent slots held by this gateway: in use, or free to hand out."""

    in_use: int = 0
    free: int = 0
    used_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Leases:
    def __init__(
        self,
        share: float = SHARE,
        idle_s: float = IDLE_S,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share = share
        self.idle_s = idle_s
        self.recheck_s = recheck_s
        self.clock = clock
        self.balances: dict[tuple[str, str], Balance] = {}
        self.slots: dict[str, Slots] = {}

    def balance(self, key_id: str, kind: str) -> Balance:
        b = self.balances.get((key_id, kind))
        if b is None:
            b = self.balances[key_id, kind] = Balance()
        return b

    def want(self, capacity: int, need: float, held: float) -> tuple[float, float]:
        """(the least the bucket must grant for the request to pass, the most to ask for)."""
        least = max(need - held, 0.0)
        return least, max(least, capacity * self.share)

    def spend(self, b: Balance, cost: float, need: float) -> bool:
        if b.held >= need:
            b.held -= cost
            b.used_at = self.clock()
            return True
        return False

    def short(self, b: Balance, missing: float, capacity: int) -> None:
        """The bucket lacked `missing` tokens: refuse locally until the refill covers them."""
        wait = missing / (capacity / 60.0)
        b.retry_after_s = wait
        b.short_until = self.clock() + min(wait, self.recheck_s)

    def idle(self, everything: bool = False) -> list[tuple[str, str, float]]:
        """Balances to give back (key, kind, amount; negative: a debt), zeroed here."""
        now = self.clock()
        out = []
        for (key_id, kind), b in self.balances.items():
            if b.held and (everything or now - b.used_at >= self.idle_s) and not b.lock.locked():
                out.append((key_id, kind, b.held))
                b.held = 0.0
        return out

    def slot(self, key_id: str) -> Slots:
        s = self.slots.get(key_id)
        if s is None:
            s = self.slots[key_id] = Slots()
        return s

    def slot_chunk(self, limit: int) -> int:
        """Slots leased at once: one for small limits (exact), 1/16 of larger ones."""
        return max(1, limit // 16)

    def idle_slots(self, everything: bool = False) -> list[tuple[str, int]]:
        now = self.clock()
        out = []
        for key_id, s in self.slots.items():
            if s.free and (everything or now - s.used_at >= self.idle_s) and not s.lock.locked():
                out.append((key_id, s.free))
                s.free = 0
        return out
