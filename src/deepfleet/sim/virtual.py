"""Benchmark a simulated engine on virtual time: no HTTP and no waiting, so a planning question
("tokens/s of R1 on 8 x H200 at 64 streams?") is answered in a second. Same engine, scheduler
and cache as `deepfleet sim`; only the clock and the transport differ."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from deepfleet.bench.stats import Distribution
from deepfleet.sim.engine import EngineConfig, SimEngine, VirtualClock
from deepfleet.sim.output import OutputModel
from deepfleet.sim.profile import LatencyProfile
from deepfleet.sim.tokenizer import FastTokenizer


@dataclass(frozen=True, slots=True)
class VirtualRun:
    output_tokens_per_s: float
    ttft: Distribution
    itl: Distribution
    duration_s: float


async def run_virtual(
    config: EngineConfig,
    profile: LatencyProfile,
    *,
    concurrency: int,
    requests: int,
    prompt_tokens: int,
    output_tokens: int,
) -> VirtualRun:
    """`requests` requests of distinct prompts, `concurrency` at a time, fixed output length."""
    clock = VirtualClock()
    tokenizer = FastTokenizer()
    engine = SimEngine(config, profile, tokenizer, OutputModel(tokenizer, reasons=False), clock)
    engine.start()
    ttfts: list[float] = []
    itls: list[float] = []
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            prompt = [index * 1_000_003 + i for i in range(prompt_tokens)]
            start = last = clock.now()
            stream = engine.submit(prompt, output_tokens, ignore_eos=True)
            first = True
            async for tokens in stream.tokens():
                now = clock.now()
                if first:
                    ttfts.append(now - start)
                    first = False
                else:
                    itls.append(now - last)
                itls.extend([0.0] * (len(tokens) - 1))
                last = now

    await asyncio.gather(*(one(i) for i in range(requests)))
    await engine.stop()
    duration = clock.now()
    return VirtualRun(
        output_tokens_per_s=requests * output_tokens / duration if duration else 0.0,
        ttft=Distribution.of(ttfts),
        itl=Distribution.of(itls),
        duration_s=duration,
    )


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
    clock = VirtualClock()
    tokenizer = FastTokenizer()
    engine = SimEngine(config, profile, tokenizer, OutputModel(tokenizer, reasons=False), clock)
    engine.start()
    t0, t1 = warmup_s, warmup_s + window_s
    ttfts: list[float] = []
    itls: list[float] = []
    tokens = 0
    sent = itertools.count()
    in_window: list[bool] = []

    async def stream() -> None:
        nonlocal tokens
        while clock.now() < t1:
            index = next(sent)
            prompt = [index * 1_000_003 + i for i in range(prompt_tokens)]
            start = last = clock.now()
            counted = t0 <= start < t1
            first = True
            async for chunk in engine.submit(prompt, output_tokens, ignore_eos=True).tokens():
                now = clock.now()
                tokens += len(chunk) * (t0 <= now < t1)
                if counted:
                    if first:
                        ttfts.append(now - start)
                    else:
                        itls.append(now - last)
                    itls.extend([0.0] * (len(chunk) - 1))
                first = False
                last = now
            in_window.append(counted)

    await asyncio.gather(*(stream() for _ in range(concurrency)))
    await engine.stop()
    return WindowRun(
        output_tokens_per_s=tokens / window_s,
        ttft=Distribution.of(ttfts),
        itl=Distribution.of(itls),
        requests=sum(in_window),
        window_s=window_s,
    )
