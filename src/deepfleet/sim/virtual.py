"""Benchmark a simulated engine on virtual time: no HTTP and no waiting, so a planning question
("tokens/s of R1 on 8 x H200 at 64 streams?") is answered in a second. Same engine, scheduler
and cache as `deepfleet sim`; only the clock and the transport differ."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from deepfleet.bench.stats import Distribution
from deepfleet.sim.engine import EngineConfig, SimEngine, VirtualClock
from deepfleet.sim.output import OutputModel
from deepfleet.sim.profile import LatencyProfile
from deepfleet.sim.tokenizer import FastTokenizer


def _engine(config: EngineConfig, profile: LatencyProfile) -> tuple[SimEngine, VirtualClock]:
    clock = VirtualClock()
    tokenizer = FastTokenizer()
    engine = SimEngine(config, profile, tokenizer, OutputModel(tokenizer, reasons=False), clock)
    engine.start()
    return engine, clock


async def _request(
    engine: SimEngine, clock: VirtualClock, index: int, prompt_tokens: int, output_tokens: int
) -> AsyncIterator[tuple[float, float | None, float, int]]:
    """Request `index` (a prompt no other index shares), fixed output length: per chunk, its
    (start, previous chunk's time or None for the first, time, tokens)."""
    prompt = [index * 1_000_003 + i for i in range(prompt_tokens)]
    start = clock.now()
    last: float | None = None
    async for tokens in engine.submit(prompt, output_tokens, ignore_eos=True).tokens():
        now = clock.now()
        yield start, last, now, len(tokens)
        last = now


@dataclass
class _Latencies:
    """TTFT per request; ITL per token (the tokens of one chunk after its first arrive at 0)."""

    ttfts: list[float] = field(default_factory=list)
    itls: list[float] = field(default_factory=list)

    def add(self, start: float, last: float | None, now: float, tokens: int) -> None:
        if last is None:
            self.ttfts.append(now - start)
        else:
            self.itls.append(now - last)
        self.itls.extend([0.0] * (tokens - 1))


@dataclass(frozen=True, slots=True)
class WindowRun:
    """Closed-loop numbers counted in a window, as benchmarks/gpu/load.py counts a real run."""

    output_tokens_per_s: float
    ttft: Distribution
    itl: Distribution
    requests: int
    window_s: float


async def run_virtual_window(
    config: EngineConfig,
    profile: LatencyProfile,
    *,
    concurrency: int,
    prompt_tokens: int,
    output_tokens: int,
    warmup_s: float = 2.0,
    window_s: float = 12.4,
) -> WindowRun:
    """`concurrency` streams send one request after another (distinct prompts, fixed output
    length) until warmup + window; counted in the window [warmup, warmup + window): output
    tokens produced in it, and TTFT/ITL of the requests sent in it."""
    engine, clock = _engine(config, profile)
    t0, t1 = warmup_s, warmup_s + window_s
    seen = _Latencies()
    tokens = 0
    sent = itertools.count()
    in_window: list[bool] = []

    async def stream() -> None:
        nonlocal tokens
        while clock.now() < t1:
            counted = t0 <= clock.now() < t1
            async for start, last, now, n in _request(
                engine, clock, next(sent), prompt_tokens, output_tokens
            ):
                tokens += n * (t0 <= now < t1)
                if counted:
                    seen.add(start, last, now, n)
            in_window.append(counted)

    await asyncio.gather(*(stream() for _ in range(concurrency)))
    await engine.stop()
    return WindowRun(
        output_tokens_per_s=tokens / window_s,
        ttft=Distribution.of(seen.ttfts),
        itl=Distribution.of(seen.itls),
        requests=sum(in_window),
        window_s=window_s,
    )
