"""`deepfleet bench` and `deepfleet bench compare`: load tests that measure what users feel.

These are test and planning tools: they send generated prompts, not real traffic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deepfleet.bench.benchmark import BenchReport, run_benchmark
from deepfleet.bench.client import OpenAIClient, RequestResult
from deepfleet.bench.compare import parse_target, run_compare
from deepfleet.bench.report import compare_dict, compare_markdown, markdown, to_dict
from deepfleet.bench.runner import LoadShape
from deepfleet.bench.stats import Slo
from deepfleet.bench.sweep import run_sweep, saturation_rate, sweep_rates
from deepfleet.bench.workloads import build_workload
from deepfleet.cli.common import console, fail, out

WORKLOAD_HELP = "shared-prefix | multi-turn | synthetic | trace:FILE (Mooncake JSONL)."
SET_HELP = "Workload option KEY=VALUE, repeatable (e.g. groups=8, system_len=512)."


def _params(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--set {item!r}: expected KEY=VALUE")
        params[key.strip()] = value.strip()
    return params


def _shape(rate: float | None, concurrency: int | None, seed: int) -> LoadShape:
    try:
        return LoadShape(concurrency=concurrency, rate=rate, seed=seed)
    except ValueError as exc:
        fail(f"{exc} (--rate R and/or --concurrency C)")


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[RequestResult], None]]:
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda _result: progress.advance(task)


async def _first_model(url: str, api_key: str | None) -> str:
    async with OpenAIClient(url, api_key=api_key) as client:
        models = json.loads(await client.get_text("/v1/models"))["data"]
    if not models:
        fail(f"{url} serves no model")
    return str(models[0]["id"])


def _write_json(path: Path | None, data: object) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {path}")


def bench(
    ctx: typer.Context,
    url: str = typer.Option(
        "", "--url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model name; default: the first in /v1/models."
    ),
    workload: str = typer.Option("synthetic", "--workload", help=WORKLOAD_HELP),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    rate: float | None = typer.Option(
        None, "--rate", help="Poisson arrivals, requests per second."
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", help="Requests in flight at most."
    ),
    requests: int = typer.Option(
        100, "--requests", help="Requests to send (0: the whole workload)."
    ),
    sweep: str | None = typer.Option(
        None, "--sweep", help="Rates to sweep, '1,2,4' or 'auto' (doubles until saturation)."
    ),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", help="Goodput SLO on TTFT."),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", help="Goodput SLO on TPOT."),
    slo_e2e_ms: float | None = typer.Option(
        None, "--slo-e2e-ms", help="Goodput SLO on E2E latency."
    ),
    metrics_url: list[str] = typer.Option(
        [],
        "--metrics-url",
        help="Engine /metrics URLs to read prefix-cache counters from (default: URL/metrics).",
    ),
    time_limit: float = typer.Option(600.0, "--time-limit", help="Seconds per run at most."),
    seed: int = typer.Option(0, "--seed"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="DEEPFLEET_API_KEY"),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write charts as PNG (needs matplotlib)."
    ),
    with_requests: bool = typer.Option(
        False, "--with-requests", help="Per-request timings in the JSON."
    ),
) -> None:
    """Benchmark an OpenAI endpoint (a load-test tool): TTFT, TPOT, ITL, E2E, throughput,
    goodput and prefix-cache hit rate, with vLLM's metric definitions."""
    if ctx.invoked_subcommand is not None:
        return
    if not url:
        fail("--url is required (or use `deepfleet bench compare`)")
    slo = None
    if any(v is not None for v in (slo_ttft_ms, slo_tpot_ms, slo_e2e_ms)):
        slo = Slo(ttft_ms=slo_ttft_ms, tpot_ms=slo_tpot_ms, e2e_ms=slo_e2e_ms)
    params = _params(sets)
    try:
        load = build_workload(workload, requests, params, seed)
        rates = None if sweep is None else sweep_rates(sweep)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    name = model or asyncio.run(_first_model(url, api_key))

    async def one(shape: LoadShape, on_result: Callable[[RequestResult], None]) -> BenchReport:
        load = build_workload(workload, requests, params, shape.seed)
        async with OpenAIClient(url, api_key=api_key) as client:
            return await run_benchmark(
                client,
                name,
                load,
                shape,
                target=url,
                time_limit_s=time_limit,
                slo=slo,
                metrics_urls=metrics_url,
                on_result=on_result,
            )

    reports: list[BenchReport] = []
    if sweep is None:
        shape = _shape(rate, concurrency, seed)
        with _progress(load.size, f"{load.name} ({shape.label()})") as tick:
            reports.append(asyncio.run(one(shape, tick)))
    else:

        def run_at(shape: LoadShape) -> BenchReport:
            with _progress(load.size, f"{load.name} ({shape.label()})") as tick:
                return asyncio.run(one(shape, tick))

        reports.extend(run_sweep(run_at, rates, concurrency=concurrency, seed=seed))
    out.print(markdown(reports))
    if sweep is not None:
        found = saturation_rate(reports)
        out.print(f"highest rate served without saturation: {found if found else 'none'} req/s")
    for report in reports:
        for error in report.summary.errors:
            console.print(f"[yellow]{report.target} error:[/] {error}")
    _write_json(json_out, [to_dict(r, with_requests=with_requests) for r in reports])
    if plot is not None:
        from deepfleet.bench.plot import plot_reports

        plot_reports(reports, plot)
        console.print(f"wrote {plot}")


def compare(
    targets: list[str] = typer.Option(
        ...,
        "--target",
        help="NAME=URL[,ENGINE_METRICS_URL...], repeatable; the first is the baseline.",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model name; default: the first target's first model."
    ),
    workload: str = typer.Option("synthetic", "--workload", help=WORKLOAD_HELP),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    concurrency: int | None = typer.Option(16, "--concurrency", help="Requests in flight at most."),
    rate: float | None = typer.Option(
        None, "--rate", help="Poisson arrivals, requests per second."
    ),
    requests: int = typer.Option(64, "--requests", help="Requests per target."),
    rounds: int = typer.Option(4, "--rounds", help="Interleaved rounds (A B A B ...)."),
    salt: bool = typer.Option(
        True,
        "--salt/--same-prompts",
        help="Salt prompts per target so shared engines give no cross-target cache hits.",
    ),
    time_limit: float = typer.Option(600.0, "--time-limit", help="Seconds per target at most."),
    seed: int = typer.Option(0, "--seed"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="DEEPFLEET_API_KEY"),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON."),
) -> None:
    """Run one workload against several targets in interleaved rounds and print them side by
    side, with throughput ratios and added latency against the first target."""
    try:
        parsed = [parse_target(t) for t in targets]
        load = build_workload(workload, requests, _params(sets), seed)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    shape = _shape(rate, concurrency, seed)
    name = model or asyncio.run(_first_model(parsed[0].url, api_key))
    total = load.size * len(parsed)
    with _progress(total, f"compare {len(parsed)} targets ({shape.label()})") as tick:
        reports = asyncio.run(
            run_compare(
                parsed,
                name,
                load,
                shape,
                rounds=rounds,
                time_limit_s=time_limit,
                salt=salt,
                api_key=api_key,
                on_result=tick,
            )
        )
    out.print(compare_markdown(reports))
    for report in reports:
        for error in report.summary.errors:
            console.print(f"[yellow]{report.target} error:[/] {error}")
    _write_json(json_out, compare_dict(reports))


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Load-test an OpenAI endpoint (benchmark tool). `deepfleet bench --url URL ...` "
        "runs one workload; `deepfleet bench compare` runs it against several targets.",
        invoke_without_command=True,
        no_args_is_help=False,
    )
    group.callback(invoke_without_command=True)(bench)
    group.command("compare")(compare)
    app.add_typer(group, name="bench")
