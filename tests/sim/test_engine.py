"""Engine timing and batching on a virtual clock: no real time passes."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from deepfleet.sim.engine import EngineConfig, SimEngine, VirtualClock
from deepfleet.sim.output import OutputModel
from deepfleet.sim.profile import LatencyProfile
from deepfleet.sim.tokenizer import FastTokenizer
from tests.sim.profiles import fixed_profile

STEP = 0.02
PREFILL_TPS = 10_000.0


def make(profile: LatencyProfile | None = None, **config: int) -> tuple[SimEngine, VirtualClock]:
    clock = VirtualClock()
    tokenizer = FastTokenizer()
    settings = {"block_size": 4, "kv_tokens": 4096, **config}
    engine = SimEngine(
        EngineConfig(model="m", **settings),  # type: ignore[arg-type]
        profile or fixed_profile(STEP, prefill_tokens_per_s=PREFILL_TPS),
        tokenizer,
        OutputModel(tokenizer, reasons=False),
        clock,
    )
    engine.start()
    return engine, clock


async def collect(engine: SimEngine, clock: VirtualClock, prompt: list[int], n: int) -> list[float]:
    stream = engine.submit(prompt, n, ignore_eos=True)
    times = []
    async for tokens in stream.tokens():
        times.extend([clock.now()] * len(tokens))
    return times


async def test_single_stream_itl_is_the_step_time() -> None:
    engine, clock = make()
    times = await collect(engine, clock, list(range(100)), 5)
    await engine.stop()
    assert len(times) == 5
    assert times[0] == pytest.approx(STEP + 100 / PREFILL_TPS)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([STEP] * 4)


async def test_concurrent_requests_share_steps() -> None:
    engine, clock = make()
    results = await asyncio.gather(*(collect(engine, clock, [i] * 8, 10) for i in range(4)))
    await engine.stop()
    ends = [r[-1] for r in results]
    assert max(ends) < 4 * 10 * STEP / 2
    assert engine.metrics.generation_tokens == 40


async def test_max_num_seqs_makes_requests_wait() -> None:
    engine, clock = make(max_num_seqs=1)
    results = await asyncio.gather(*(collect(engine, clock, [i] * 8, 5) for i in range(2)))
    await engine.stop()
    first, second = sorted(results, key=lambda r: r[0])
    assert second[0] >= first[-1]


async def test_prefix_cache_shortens_prefill() -> None:
    engine, clock = make()
    prompt = list(range(400))
    cold = await collect(engine, clock, prompt, 1)
    start = clock.now()
    warm = await collect(engine, clock, prompt, 1)
    await engine.stop()
    assert warm[0] - start < cold[0]
    assert engine.metrics.prefix_queries == 800
    assert engine.metrics.prefix_hits == 396


async def test_small_kv_cache_preempts_and_still_finishes() -> None:
    engine, clock = make(kv_tokens=48)
    results = await asyncio.gather(*(collect(engine, clock, [i] * 8, 12) for i in range(3)))
    await engine.stop()
    assert all(len(r) == 12 for r in results)
    assert engine.scheduler.preemptions > 0


async def test_chunked_prefill_respects_the_token_budget() -> None:
    engine, clock = make(max_num_batched_tokens=64)
    times = await collect(engine, clock, list(range(256)), 1)
    await engine.stop()
    assert times[0] == pytest.approx(4 * STEP + 256 / PREFILL_TPS)
