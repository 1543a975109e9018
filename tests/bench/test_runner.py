from __future__ import annotations

import asyncio

import pytest

from deepfleet.bench.client import RequestResult, RequestSpec
from deepfleet.bench.runner import LoadShape, run_load


def make_send(delay: float, log: list[str], peak: list[int]) -> object:
    in_flight = [0]

    async def send(spec: RequestSpec) -> RequestResult:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        log.append(spec.prompt or "")
        try:
            await asyncio.sleep(delay)
        finally:
            in_flight[0] -= 1
        return RequestResult(True, "", delay, (), delay, 1, 1, 0.0)

    return send


@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_concurrency_caps_requests_in_flight(concurrency: int) -> None:
    log: list[str] = []
    peak = [0]
    specs = [RequestSpec(prompt=str(i)) for i in range(12)]
    run = await run_load(
        make_send(0.01, log, peak),  # type: ignore[arg-type]
        [[s] for s in specs],
        LoadShape(concurrency=concurrency),
        time_limit_s=10,
    )
    assert len(run.results) == 12
    assert peak[0] == min(concurrency, 12)
    assert not run.timed_out


async def test_chain_requests_run_in_order() -> None:
    log: list[str] = []
    peak = [0]
    chains = [[RequestSpec(prompt=f"u{u}r{r}") for r in range(3)] for u in range(2)]
    await run_load(
        make_send(0.005, log, peak),  # type: ignore[arg-type]
        chains,
        LoadShape(concurrency=8),
        time_limit_s=10,
    )
    assert peak[0] == 2
    for user in ("u0", "u1"):
        assert [p for p in log if p.startswith(user)] == [f"{user}r0", f"{user}r1", f"{user}r2"]


async def test_time_limit_cancels_and_counts_failures() -> None:
    log: list[str] = []
    peak = [0]
    run = await run_load(
        make_send(5.0, log, peak),  # type: ignore[arg-type]
        [[RequestSpec(prompt="x")]] * 4,
        LoadShape(concurrency=2),
        time_limit_s=0.1,
    )
    assert run.timed_out
    assert run.duration_s < 2
    assert [r.ok for r in run.results] == [False, False]


async def test_schedule_delays_starts() -> None:
    log: list[str] = []
    peak = [0]
    run = await run_load(
        make_send(0.0, log, peak),  # type: ignore[arg-type]
        [[RequestSpec(prompt="a")], [RequestSpec(prompt="b")]],
        LoadShape(concurrency=4),
        time_limit_s=5,
        schedule_s=[0.0, 0.2],
    )
    assert run.duration_s >= 0.2
    assert log == ["a", "b"]


def test_shape_needs_a_concurrency_or_a_rate() -> None:
    with pytest.raises(ValueError):
        LoadShape()
