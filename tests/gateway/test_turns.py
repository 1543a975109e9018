"""Relays take turns: at most `per_turn` go on per loop iteration, none wait under light load."""

from __future__ import annotations

import asyncio

from deepfleet.gateway.turns import Turns


async def test_light_load_never_waits() -> None:
    turns = Turns(per_turn=4)
    turns.active = 4
    assert turns.wait() is None


async def test_heavy_load_releases_per_turn_each_iteration_oldest_first() -> None:
    turns = Turns(per_turn=2)
    turns.active = 5
    futures = [turns.wait() for _ in range(5)]
    assert all(f is not None for f in futures)
    released: list[list[int]] = []
    for _ in range(3):
        await asyncio.sleep(0)
        released.append([i for i, f in enumerate(futures) if f is not None and f.done()])
    assert released == [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4]]


async def test_a_cancelled_wait_does_not_use_a_turn() -> None:
    turns = Turns(per_turn=1)
    turns.active = 3
    first, second = turns.wait(), turns.wait()
    assert first is not None and second is not None
    first.cancel()
    await asyncio.sleep(0)
    assert second.done() and not second.cancelled()
