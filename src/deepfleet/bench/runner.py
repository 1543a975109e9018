"""Run a workload's requests at a fixed concurrency or with Poisson arrivals, within a time bound.

A workload is a list of chains: the requests of one chain run one after another (the rounds of
one user's conversation), different chains run in parallel. Independent requests are chains of
one. When a request finishes, its chain's next request joins the back of the ready queue.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from deepfleet.bench.client import RequestResult, RequestSpec

Send = Callable[[RequestSpec], Awaitable[RequestResult]]
Chains = Sequence[Sequence[RequestSpec]]


@dataclass(frozen=True, slots=True)
class LoadShape:
    """How requests arrive: a concurrency cap, a Poisson rate (req/s), or both."""

    concurrency: int | None = None
    rate: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.concurrency is None and self.rate is None:
            raise ValueError("give a concurrency, a rate, or both")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")

    def label(self) -> str:
        parts = []
        if self.rate is not None:
            parts.append(f"rate {self.rate:g}/s")
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class RunResult:
    results: tuple[RequestResult, ...]
    duration_s: float
    timed_out: bool


async def run_load(
    send: Send,
    chains: Chains,
    shape: LoadShape,
    *,
    time_limit_s: float,
    on_result: Callable[[RequestResult], None] | None = None,
    schedule_s: Sequence[float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> RunResult:
    """Issue every request of `chains` through `send`; stop issuing and cancel what is in
    flight once time_limit_s has passed (cancelled requests count as failed).

    With `schedule_s`, chain i becomes ready schedule_s[i] seconds after the start (trace
    replay); the shape's concurrency still caps what is in flight."""
    runner = _Runner(send, chains, shape, on_result, clock, schedule_s)
    start = clock()
    timed_out = False
    try:
        async with asyncio.timeout(time_limit_s):
            await runner.dispatch()
    except TimeoutError:
        timed_out = True
        await runner.cancel_in_flight()
    return RunResult(tuple(runner.results), clock() - start, timed_out)


class _Runner:
    def __init__(
        self,
        send: Send,
        chains: Chains,
        shape: LoadShape,
        on_result: Callable[[RequestResult], None] | None,
        clock: Callable[[], float],
        schedule_s: Sequence[float] | None = None,
    ) -> None:
        self._send = send
        self._chains = chains
        self._shape = shape
        self._on_result = on_result
        self._clock = clock
        self._rng = random.Random(shape.seed)
        self._slots = asyncio.Semaphore(shape.concurrency) if shape.concurrency else None
        self._schedule = schedule_s
        starts = [] if schedule_s is not None else [i for i, c in enumerate(chains) if c]
        self._ready: deque[tuple[int, int]] = deque((i, 0) for i in starts)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._releaser: asyncio.Task[None] | None = None
        self.results: list[RequestResult] = []

    async def dispatch(self) -> None:
        total = sum(len(chain) for chain in self._chains)
        if self._schedule is not None:
            self._releaser = asyncio.create_task(self._release(self._schedule))
        for _ in range(total):
            if self._slots is not None:
                await self._slots.acquire()
            if self._shape.rate is not None:
                await asyncio.sleep(self._rng.expovariate(self._shape.rate))
            while not self._ready:
                self._wake.clear()
                await self._wake.wait()
            chain, position = self._ready.popleft()
            task = asyncio.create_task(self._one(chain, position))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _release(self, schedule_s: Sequence[float]) -> None:
        start = self._clock()
        for chain, at in enumerate(schedule_s[: len(self._chains)]):
            delay = start + at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._chains[chain]:
                self._ready.append((chain, 0))
                self._wake.set()

    async def _one(self, chain: int, position: int) -> None:
        try:
            result = await self._send(self._chains[chain][position])
        finally:
            if self._slots is not None:
                self._slots.release()
        self._record(result)
        if position + 1 < len(self._chains[chain]):
            self._ready.append((chain, position + 1))
            self._wake.set()

    def _record(self, result: RequestResult) -> None:
        self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)

    async def cancel_in_flight(self) -> None:
        if self._releaser is not None:
            self._releaser.cancel()
            await asyncio.gather(self._releaser, return_exceptions=True)
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        now = self._clock()
        for _ in pending:
            self._record(
                RequestResult(False, "cancelled at the time limit", 0.0, (), 0.0, 0, 0, now)
            )
