"""Run one workload against several targets in interleaved rounds (A B A B ...), so machine
noise falls on every target alike.

The workload is cut into `rounds` slices; in each round every target runs the same slice in turn.
By default each target's prompts start with a salt naming the target, so targets that share
engines (a gateway and the engine behind it) do not get each other's prefix-cache hits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deepfleet.bench.benchmark import BenchReport
from deepfleet.bench.client import OpenAIClient, RequestResult, RequestSpec
from deepfleet.bench.metrics import PrefixCounters, read_counters
from deepfleet.bench.runner import LoadShape, run_load
from deepfleet.bench.stats import Slo, summarize
from deepfleet.bench.workloads.base import Workload


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    metrics_urls: tuple[str, ...] = ()


def parse_target(text: str) -> Target:
    """NAME=URL, optionally NAME=URL,METRICS_URL,... (engines whose counters to read)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"target {text!r}: expected NAME=URL")
    url, *metrics = rest.split(",")
    return Target(name.strip(), url.strip(), tuple(m.strip() for m in metrics))


def salted(spec: RequestSpec, salt: str) -> RequestSpec:
    if spec.messages is not None:
        first, *rest = spec.messages
        head = {**first, "content": f"[{salt}] {first.get('content', '')}"}
        return dataclasses.replace(spec, messages=(head, *rest))
    return dataclasses.replace(spec, prompt=f"[{salt}] {spec.prompt or ''}")


def slices(chains: Sequence[Sequence[RequestSpec]], rounds: int) -> list[list[list[RequestSpec]]]:
    count = max(1, min(rounds, len(chains)))
    size, extra = divmod(len(chains), count)
    out, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        out.append([list(chain) for chain in chains[start:end]])
        start = end
    return out


async def run_compare(
    targets: Sequence[Target],
    model: str,
    workload: Workload,
    shape: LoadShape,
    *,
    rounds: int = 4,
    time_limit_s: float = 600.0,
    slo: Slo | None = None,
    salt: bool = True,
    api_key: str | None = None,
    on_result: Callable[[RequestResult], None] | None = None,
) -> list[BenchReport]:
    """One BenchReport per target, in the order given; time_limit_s bounds each target's total."""
    clients = [OpenAIClient(t.url, api_key=api_key) for t in targets]
    results: list[list[RequestResult]] = [[] for _ in targets]
    durations = [0.0] * len(targets)
    counters: list[PrefixCounters | None] = [PrefixCounters() for _ in targets]
    timed_out = [False] * len(targets)
    started = time.time()
    try:
        for part in slices(workload.chains, rounds):
            for index, (target, client) in enumerate(zip(targets, clients, strict=True)):
                left = time_limit_s - durations[index]
                if left <= 0:
                    timed_out[index] = True
                    continue
                chains = [[salted(s, target.name) for s in c] for c in part] if salt else part
                urls = list(target.metrics_urls) or [f"{client.base_url}/metrics"]
                before = await read_counters(client.session(), urls)

                async def send(spec: RequestSpec, client: OpenAIClient = client) -> RequestResult:
                    return await client.send(model, spec)

                run = await run_load(send, chains, shape, time_limit_s=left, on_result=on_result)
                after = await read_counters(client.session(), urls)
                results[index].extend(run.results)
                durations[index] += run.duration_s
                timed_out[index] |= run.timed_out
                known = counters[index]
                counters[index] = (
                    known + (after - before)
                    if known is not None and before is not None and after is not None
                    else None
                )
    finally:
        for client in clients:
            await client.close()
    return [
        BenchReport(
            target=target.name,
            url=target.url,
            model=model,
            workload=workload.name,
            load=f"{shape.label()}, {rounds} interleaved rounds",
            summary=summarize(results[i], durations[i], slo),
            prefix_cache_hit_rate=_hit_rate(counters[i]),
            timed_out=timed_out[i],
            started_unix=started,
            results=tuple(results[i]),
        )
        for i, target in enumerate(targets)
    ]


def _hit_rate(counters: PrefixCounters | None) -> float | None:
    return None if counters is None else counters.hit_rate
