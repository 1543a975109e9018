"""Relays take turns under load, so new requests get their first bytes quickly."""

from __future__ import annotations

import asyncio
from collections import deque

# Measured on the overhead benchmark (2 cores, 32 and 256 streams): 4 gave the lowest time to
# first token; 8 and 16 were 2-3x slower there, with no better CPU per chunk.
RELAYS_PER_TURN = 4


class Turns:
    """Under load, relays take turns reading: each event-loop iteration lets at most
    `per_turn` waiting relays go on, oldest first.

    A new request needs a few loop iterations before its first byte (parse and route, send
    upstream, the engine's first bytes, answer). If every active stream relays once per
    iteration, each of those iterations costs a read and a write per stream, so the time to
    first token grows with the number of streams. Taking turns keeps iterations short; each
    relay then moves what piled up meanwhile in one read and one write, which costs less CPU
    per chunk, not more. With `per_turn` or fewer active streams nobody waits.
    """

    def __init__(self, per_turn: int = RELAYS_PER_TURN) -> None:
        self.per_turn = per_turn
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._ticking = False

    def wait(self) -> asyncio.Future[None] | None:
        """A future to await before the next read, or None to go on at once."""
        if self.active <= self.per_turn:
            return None
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append(future)
        if not self._ticking:
            self._ticking = True
            loop.call_soon(self._tick)
        return future

    def _tick(self) -> None:
        waiting = self._waiting
        released = 0
        while waiting and released < self.per_turn:
            future = waiting.popleft()
            if not future.done():  # not cancelled (the client left)
                future.set_result(None)
                released += 1
        if waiting:
            asyncio.get_running_loop().call_soon(self._tick)
        else:
            self._ticking = False
