"""One benchmark run against one target: the load, the timing summary and the prefix-cache
hit rate read from the engines' metrics before and after."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deepfleet.bench.client import OpenAIClient, RequestResult, RequestSpec
from deepfleet.bench.metrics import read_counters
from deepfleet.bench.runner import LoadShape, run_load
from deepfleet.bench.stats import Slo, Summary, summarize
from deepfleet.bench.workloads.base import Workload


@dataclass(frozen=True, slots=True)
class BenchReport:
    target: str
    url: str
    model: str
    workload: str
    load: str
    summary: Summary
    prefix_cache_hit_rate: float | None
    timed_out: bool
    started_unix: float
    results: tuple[RequestResult, ...] = ()


async def run_benchmark(
    client: OpenAIClient,
    model: str,
    workload: Workload,
    shape: LoadShape,
    *,
    target: str = "target",
    time_limit_s: float = 600.0,
    slo: Slo | None = None,
    metrics_urls: Sequence[str] = (),
    on_result: Callable[[RequestResult], None] | None = None,
    replay: bool = True,
) -> BenchReport:
    """Run `workload` against the client's URL. `metrics_urls` default to the URL's /metrics.

    With `replay` and a workload that has a schedule (a trace) and no rate in `shape`, requests
    start at the trace's timestamps."""
    urls = list(metrics_urls) or [f"{client.base_url}/metrics"]
    before = await read_counters(client.session(), urls)
    started = time.time()

    async def send(spec: RequestSpec) -> RequestResult:
        return await client.send(model, spec)

    schedule = workload.schedule_s if replay and shape.rate is None else None
    run = await run_load(
        send,
        workload.chains,
        shape,
        time_limit_s=time_limit_s,
        on_result=on_result,
        schedule_s=schedule,
    )
    after = await read_counters(client.session(), urls)
    hit_rate = (after - before).hit_rate if before is not None and after is not None else None
    return BenchReport(
        target=target,
        url=client.base_url,
        model=model,
        workload=workload.name,
        load=shape.label(),
        summary=summarize(run.results, run.duration_s, slo),
        prefix_cache_hit_rate=hit_rate,
        timed_out=run.timed_out,
        started_unix=started,
        results=run.results,
    )
