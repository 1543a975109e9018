"""A gateway's lease bookkeeping (store/leases.py), with a clock handed in: spending without
a round trip, asking for the least a request needs, remembering a short bucket, giving idle
balances back."""

from __future__ import annotations

import pytest

from deepfleet.gateway.store.leases import Leases


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("capacity", "need", "held", "least", "most"),
    [
        (60, 1, 0, 1, 1),  # RPM 60: a second of refill is one request
        (6000, 57, 0, 57, 100),  # TPM 6000: a lease of 100 covers a 57-token reservation
        (6000, 57, 80, 0, 100),  # held enough already: nothing is needed
        (6000, 57, -30, 87, 100),  # a debt is paid before the request passes
        (10**9, 1, 0, 1, 10**9 / 60),
    ],
)
def test_want(capacity: int, need: float, held: float, least: float, most: float) -> None:
    assert Leases().want(capacity, need, held) == pytest.approx((least, most))


def test_spend_short_and_give_back() -> None:
    clock = Clock()
    leases = Leases(idle_s=0.5, recheck_s=0.5, clock=clock)
    b = leases.balance("k", "tpm")
    b.held = 100
    assert leases.spend(b, cost=57, need=57) and b.held == 43
    assert not leases.spend(b, cost=57, need=57) and b.held == 43
    leases.short(b, missing=14, capacity=6000)  # 14 tokens at 100/s: 0.14 s
    assert b.short_until == pytest.approx(100.14) and b.retry_after_s == pytest.approx(0.14)
    leases.short(b, missing=1, capacity=60)  # 1 request at 1/s: refused locally 0.5 s at most
    assert b.short_until == pytest.approx(100.5) and b.retry_after_s == pytest.approx(1.0)
    assert leases.idle() == []  # used just now
    clock.now += 0.6
    assert leases.idle() == [("k", "tpm", 43)] and b.held == 0
    b.held = -12  # settled more than leased: the debt goes back too
    assert leases.idle(everything=True) == [("k", "tpm", -12)]


@pytest.mark.parametrize(("limit", "chunk"), [(1, 1), (15, 1), (16, 1), (64, 4), (1000, 62)])
def test_slot_chunk(limit: int, chunk: int) -> None:
    assert Leases().slot_chunk(limit) == chunk


def test_idle_slots_go_back() -> None:
    clock = Clock()
    leases = Leases(idle_s=0.5, clock=clock)
    s = leases.slot("k")
    s.free, s.in_use, s.used_at = 3, 2, clock.now
    assert leases.idle_slots() == []
    clock.now += 1
    assert leases.idle_slots() == [("k", 3)] and (s.free, s.in_use) == (0, 2)
