"""Deadline: moving a deadline later costs no timer; it still fires once, at the last time set,
and not at all once cleared."""

from __future__ import annotations

import asyncio

from deepfleet.gateway.deadline import Deadline


async def test_moved_later_fires_once_at_the_last_time() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    deadline = Deadline(loop)
    start = loop.time()
    for _ in range(5):
        deadline.set(0.05, lambda: fired.append(loop.time()))
        await asyncio.sleep(0.02)  # 0.1 s of moves: the first timer fires early, re-arms
    await asyncio.sleep(0.2)
    assert len(fired) == 1
    assert fired[0] - start >= 0.08 + 0.05 - 0.01
    assert deadline.due is None


async def test_cleared_never_fires_and_an_earlier_time_fires_first() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    deadline = Deadline(loop)
    deadline.set(0.03, lambda: fired.append("cleared"))
    deadline.clear()
    await asyncio.sleep(0.06)
    assert fired == []
    deadline.set(10.0, lambda: fired.append("late"))
    deadline.set(0.02, lambda: fired.append("early"))  # earlier than the pending timer
    await asyncio.sleep(0.08)
    assert fired == ["early"]
    deadline.cancel()


async def test_setting_again_and_again_makes_no_new_timer() -> None:
    loop = asyncio.get_running_loop()
    made: list[float] = []
    call_at = loop.call_at

    def counting(when: float, callback: object, *args: object) -> asyncio.TimerHandle:
        made.append(when)
        return call_at(when, callback, *args)  # type: ignore[arg-type]

    loop.call_at = counting  # type: ignore[method-assign]
    try:
        deadline = Deadline(loop)
        for _ in range(100):  # a request: the head's deadline, then the body's, then none
            deadline.set(10.0, lambda: None)
            deadline.set(60.0, lambda: None)
            deadline.clear()
        assert len(made) == 1
    finally:
        loop.call_at = call_at  # type: ignore[method-assign]
        deadline.cancel()
