"""Bookkeeping that can wait: metrics and usage accounting run off the requests' path.

When a streamed answer ends, the client has its last bytes and sends its next request at
once; metrics and the token bucket's debit done then would delay reading it. They are queued
here instead and run when the gateway would be waiting anyway: right after the next request
is written to its engine (the engine computes meanwhile), and at the latest `delay_s` after
they were queued. They also run before anything reads their effect: a key's tokens/min check,
/metrics, and shutdown. Nothing is dropped; a job that raises is logged and the rest run.

What a next request must see at once (admission slots, a key's concurrency, in-flight counts
for routing) is never deferred.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DELAY_S = 0.01


class Later:
    def __init__(self, delay_s: float = DELAY_S) -> None:
        self.delay_s = delay_s
        self._jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Callable[..., None], *args: Any) -> None:
        """Run `job(*args)` soon, off the path of the requests in flight."""
        self._jobs.append((job, args))
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): nothing to wait for
                self.run()
                return
            self._timer = loop.call_later(self.delay_s, self._on_timer)

    def run(self) -> None:
        """Run every queued job now."""
        while self._jobs:
            jobs, self._jobs = self._jobs, []
            for job, args in jobs:
                try:
                    job(*args)
                except Exception:
                    log.exception("deferred gateway bookkeeping failed")

    def _on_timer(self) -> None:
        self._timer = None
        self.run()
