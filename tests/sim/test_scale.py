"""64 simulated engines (DeepSeek-R1, TP8 on H200) in one process: they start within 30 s and
sustain a benchmark with the timing the profile predicts."""

from __future__ import annotations

import itertools
import time

import pytest

from deepfleet.bench.client import OpenAIClient, RequestResult, RequestSpec
from deepfleet.bench.runner import LoadShape, run_load
from deepfleet.bench.stats import summarize
from deepfleet.sim.build import SimSpec, build
from deepfleet.sim.engine import ScaledClock
from deepfleet.sim.server import serve_engines
from deepfleet.sim.tokenizer import FastTokenizer

ENGINES = 64
SPEED = 0.1  # ten times slower than an H200: 64 streams of chunks fit on 2 cores


@pytest.mark.slow
async def test_64_engines_start_fast_and_hold_their_timing() -> None:
    config, profile, _ = build(SimSpec("deepseek-ai/DeepSeek-R1", "H200", tp=8))
    started = time.monotonic()
    async with serve_engines(
        config, profile, FastTokenizer(), count=ENGINES, port=0, clock=ScaledClock(SPEED)
    ) as running:
        start_s = time.monotonic() - started
        clients = [OpenAIClient(item.url) for item in running]
        rotation = itertools.cycle(clients)

        async def send(spec: RequestSpec) -> RequestResult:
            return await next(rotation).send(config.model, spec)

        prompt = " ".join(["word"] * 200)
        specs = [RequestSpec(prompt=f"{i} {prompt}", max_tokens=32) for i in range(256)]
        run = await run_load(
            send, [[s] for s in specs], LoadShape(concurrency=64), time_limit_s=120
        )
        for client in clients:
            await client.close()
    summary = summarize(run.results, run.duration_s)
    expected_itl = profile.step_s(1, 200, 0) / SPEED
    print(f"start {start_s:.1f} s, {summary.output_throughput:.0f} tok/s, ITL p50 "
          f"{summary.itl.p50 * 1000:.1f} ms (profile {expected_itl * 1000:.1f} ms)")  # fmt: skip
    assert start_s < 30
    assert summary.completed == 256
    assert summary.itl.p50 == pytest.approx(expected_itl, rel=0.25)
