"""A deadline that moves on every request, kept by one lazy timer.

A connection's deadlines (the request head in time, then its body) are set and cleared a few
times per request. A timer per setting (`call_later`, then `cancel`) costs event-loop work on
every request, measured at 3% of the gateway's CPU on the overhead benchmark (32 streams).
Here setting a deadline only writes the time it falls due; the timer is created only when
none is pending or the new time is earlier than the pending one. When the timer fires early
(the deadline moved later, or was cleared), it re-arms for the current time or stops. A
connection serving requests back to back thus touches its timer about once per timeout period,
not several times per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    """`then()` runs once `seconds` after the last `set`, unless cleared first."""

    __slots__ = ("_at", "_loop", "_then", "_timer", "due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0
        self._then: Callable[[], None] | None = None
        self.due: float | None = None
        """When `then` runs (the loop's clock); None when no deadline is set."""

    def set(self, seconds: float, then: Callable[[], None]) -> None:
        at = self._loop.time() + seconds
        self.due, self._then = at, then
        if self._timer is None or at < self._at:
            self._schedule(at)

    def clear(self) -> None:
        self.due = self._then = None

    def cancel(self) -> None:
        """Clear, and drop the pending timer (the connection is gone)."""
        self.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        due, then = self.due, self._then
        if due is None or then is None:
            return
        if self._loop.time() < due:  # moved later since the timer was set
            self._schedule(due)
            return
        self.due = self._then = None
        then()
