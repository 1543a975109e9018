"""One simulated engine: the step loop that turns the scheduler's batches into timed tokens.

Each step: schedule, wait the profile's step time (scaled by the clock's speed), apply the
step, hand new tokens to their streams, publish KV events, update metrics. Streams that fall
behind get several tokens at once, as vLLM's output collector merges them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from deepfleet.sim.kv_cache import KvCache, KvEvent
from deepfleet.sim.metrics import EngineMetrics
from deepfleet.sim.output import OutputModel, Token
from deepfleet.sim.profile import LatencyProfile
from deepfleet.sim.scheduler import Scheduler
from deepfleet.sim.scheduler import Sequence as Seq
from deepfleet.sim.tokenizer import Tokenizer


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class ScaledClock:
    """Real time; simulated durations are divided by `speed` (speed 10: ten times faster)."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)


class VirtualClock:
    """Time that advances only when the engine sleeps: unit tests run in microseconds."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        for _ in range(3):  # let woken streams read the time before it moves on
            await asyncio.sleep(0)
        self.t += seconds


@dataclass(frozen=True)
class EngineConfig:
    """vLLM's scheduler and cache settings that shape timing."""

    model: str
    max_model_len: int = 16384
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    kv_tokens: int = 1_000_000
    prefix_caching: bool = True
    reasoning_parser: bool = False


class RequestStream:
    """One request's output as it is produced."""

    def __init__(self, seq: Seq, output: OutputModel) -> None:
        self.seq = seq
        self._output = output
        self._ready = asyncio.Event()
        self._read = 0
        self.finish_reason: str | None = None

    def _wake(self) -> None:
        self._ready.set()

    async def tokens(self) -> AsyncIterator[list[Token]]:
        """Yields lists of new tokens (usually one) until the request finishes."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            end = len(self.seq.output_ids)
            if end > self._read:
                yield [self._output.token(self.seq.plan, i) for i in range(self._read, end)]
                self._read = end
            if self.finish_reason is not None:
                return


class SimEngine:
    def __init__(
        self,
        config: EngineConfig,
        profile: LatencyProfile,
        tokenizer: Tokenizer,
        output: OutputModel,
        clock: Clock,
        publish: Callable[[Sequence[KvEvent]], None] | None = None,
    ) -> None:
        self.config = config
        self.profile = profile
        self.tokenizer = tokenizer
        self.output = output
        self.clock = clock
        self._publish = publish
        num_blocks = max(1, config.kv_tokens // config.block_size)
        self.cache = KvCache(num_blocks, config.block_size, config.prefix_caching)
        self.scheduler = Scheduler(self.cache, config.max_num_seqs, config.max_num_batched_tokens)
        self.metrics = EngineMetrics(config.model, config.block_size, num_blocks)
        self._streams: dict[int, RequestStream] = {}
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._ids = itertools.count()
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"sim-{self.config.model}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def submit(self, prompt_ids: list[int], max_tokens: int, ignore_eos: bool) -> RequestStream:
        plan = self.output.plan(prompt_ids, max_tokens, ignore_eos)
        seq = Seq(f"req-{next(self._ids)}", prompt_ids, plan, self.clock.now())
        stream = RequestStream(seq, self.output)
        self._streams[id(seq)] = stream
        self.scheduler.add(seq)
        self._work.set()
        return stream

    def abort(self, stream: RequestStream) -> None:
        if stream.finish_reason is None:
            self.scheduler.abort(stream.seq)
            self._done(stream, "abort")

    async def _loop(self) -> None:
        while True:
            if not self.scheduler.has_work:
                self._refresh_gauges()
                self._work.clear()
                await self._work.wait()
                continue
            batch = self.scheduler.schedule()
            self._refresh_gauges()
            duration = self.profile.step_s(
                batch.decode_seqs, batch.context_tokens, batch.prefill_tokens
            )
            await self.clock.sleep(max(duration, 1e-4))
            now = self.clock.now()
            for seq in self.scheduler.complete(batch):
                self._emit(seq, now)
            if self._publish is not None:
                events = self.cache.drain_events()
                if events:
                    self._publish(events)
            else:
                self.cache.events.clear()

    def _emit(self, seq: Seq, now: float) -> None:
        stream = self._streams.get(id(seq))
        if stream is None:
            return
        index = len(seq.output_ids)
        seq.output_ids.append(self.output.token(seq.plan, index).id)
        m = self.metrics
        m.generation_tokens += 1
        key = id(seq)
        if index == 0:
            self._first[key] = now
            m.ttft.observe(now - seq.arrival)
            m.prompt_tokens += len(seq.prompt_ids)
        else:
            m.itl.observe(now - self._last[key])
        self._last[key] = now
        if len(seq.output_ids) >= seq.plan.length:
            self.scheduler.finish(seq)
            if seq.plan.length > 1:
                m.tpot.observe((now - self._first[key]) / (seq.plan.length - 1))
            m.e2e.observe(now - seq.arrival)
            self._done(stream, seq.plan.finish_reason)
        stream._wake()

    def _done(self, stream: RequestStream, reason: str) -> None:
        stream.finish_reason = reason
        self.metrics.success[reason] = self.metrics.success.get(reason, 0) + 1
        key = id(stream.seq)
        self._streams.pop(key, None)
        self._first.pop(key, None)
        self._last.pop(key, None)
        stream._wake()

    def _refresh_gauges(self) -> None:
        m = self.metrics
        m.running = len(self.scheduler.running)
        m.waiting = len(self.scheduler.waiting)
        m.kv_usage = self.cache.usage
        m.prefix_queries = self.cache.queries
        m.prefix_hits = self.cache.hits
        m.preemptions = self.scheduler.preemptions
