"""The GPU scenarios of issue 11: gateway overhead, planner vs vLLM, KV-aware routing.

Each takes the run's context (processes, budget, output folder) and writes its JSON as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
from benchmarks.gpu import planner_check, vllm_log
from benchmarks.gpu.engines import (
    EngineSpec,
    metrics_text,
    start_engine,
    start_gateway,
    wait_ready,
    write_fleet,
)
from benchmarks.gpu.load import LoadRunner, completion_spec, random_prompt
from benchmarks.gpu.procs import Budget, Proc, Procs, Results, log
from benchmarks.gpu.served import need_gpus

from deepfleet.bench.client import OpenAIClient, RequestResult, RequestSpec
from deepfleet.bench.metrics import parse_counters
from deepfleet.bench.runner import LoadShape, run_load
from deepfleet.bench.stats import summarize
from deepfleet.bench.text import tagged, words
from deepfleet.catalog.hardware import GiB
from deepfleet.fleet.ports import free_port


@dataclass
class Run:
    procs: Procs
    budget: Budget
    out: Path
    work: Path  # state files of the gateways (not returned)
    models: Path
    fake: bool
    meta: dict[str, Any]

    def results(self, name: str) -> Results:
        return Results(self.out / f"{name}.json", self.meta | {"scenario": name})


# -- planner --------------------------------------------------------------------------------
def planner_result(results: Results, spec: EngineSpec, text: str, ready_s: float | None) -> None:
    facts = vllm_log.parse(text)
    pred = planner_check.predict(spec.model_dir, spec.gpu_memory_utilization, spec.max_model_len)
    check = planner_check.compare(pred, facts)
    results.put("startup", facts.as_dict() | {"ready_s": ready_s})
    results.put("check", check)
    print(planner_check.table(check), flush=True)


async def planner(run: Run, model: str, max_model_len: int, start_cap_s: float) -> None:
    """Start one engine at vLLM's default utilization, compare its memory lines with the
    plan, stop it. Readiness is waited for up to `start_cap_s`; the memory lines come before."""
    results = run.results(f"planner-{model}")
    env = {"VLLM_USE_DEEP_GEMM": "0"} if model.startswith("dsv3") else {}
    spec = EngineSpec(model, str(run.models / model), max_model_len, 0.92, env=env, fake=run.fake)
    results.put("engine", {"model": model, "max_model_len": max_model_len, "env": env})
    proc = start_engine(run.procs, spec, f"engine-{model}")
    ready: float | None = None
    try:
        ready = await wait_ready(proc, spec.url, min(start_cap_s, run.budget.left() - 10))
    except (TimeoutError, RuntimeError) as exc:
        log(f"{model}: {exc}")
        results.put("start_error", str(exc))
    finally:  # also when the run's budget cancels us: the memory lines come before readiness
        planner_result(results, spec, proc.text(), ready)
        run.procs.stop(proc)
        results.put("complete", ready is not None)


# -- gateway overhead -------------------------------------------------------------------------
async def overhead(
    run: Run,
    model: str,
    concurrencies: list[int],
    rounds: int,
    workers: int | list[int],
    start_cap_s: float,
    prompt_len: int = 64,
    max_tokens: int = 256,
    share_s: float | None = None,
) -> None:
    """Direct to one engine vs through the gateway (one per worker count in `workers`),
    alternating, per concurrency; the rounds fill what is left of `share_s` (default: of the
    run's budget). Each gateway run also records the CPU seconds its processes used."""
    counts = [workers] if isinstance(workers, int) else list(workers)
    results = run.results("overhead")
    budget = Budget(min(share_s or run.budget.left(), run.budget.left()))
    spec = EngineSpec(model, str(run.models / model), 4096, 0.92, fake=run.fake)
    results.put("settings", {
        "model": model, "concurrencies": concurrencies, "rounds": rounds, "workers": counts,
        "prompt_len": prompt_len, "max_tokens": max_tokens,
    })  # fmt: skip
    engine = start_engine(run.procs, spec, f"engine-{model}")
    plan_results = run.results(f"planner-{model}")
    ready: float | None = None
    try:
        ready = await wait_ready(engine, spec.url, min(start_cap_s, budget.left() - 30))
    finally:  # the memory lines come before readiness: keep them either way
        planner_result(plan_results, spec, engine.text(), ready)
        plan_results.put("complete", ready is not None)
    state = write_fleet(
        run.work / "overhead", model, "round_robin", [spec],
        tokenizer=spec.model_dir, max_model_len=spec.max_model_len,
    )  # fmt: skip
    targets = {"direct": spec.url}
    gateways: dict[str, Proc] = {}
    for count in counts:
        gateway, gw_url = start_gateway(run.procs, f"gateway-w{count}", state, count)
        await wait_ready(gateway, gw_url, 60)
        targets[f"gateway-w{count}"] = gw_url
        gateways[f"gateway-w{count}"] = gateway
    request = completion_spec(random_prompt(random.Random(0), prompt_len), max_tokens)
    loader = LoadRunner()
    try:
        log("warm-up (first requests compile kernels)")
        loader.run(spec.url, model, request, 1, 0.0, 3.0)
        loader.run(spec.url, model, request, max(concurrencies), 0.0, 8.0)
        for name in gateways:
            loader.run(targets[name], model, request, 64, 0.0, 3.0)
        runs = len(concurrencies) * rounds * len(targets)
        drain = 1.0 + max_tokens / 40.0  # a 256-token stream at 256 streams: ~5.5 s
        per_run = (budget.left() - 25.0) / runs
        window = max(3.0, min(30.0, per_run - 2.0 - drain - 0.6))
        results.put("window_s", window)
        log(f"{runs} runs, {window:.1f} s windows")
        for conc in concurrencies:
            for rnd in range(rounds):
                order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
                for name in order:
                    if budget.left() < window + drain + 15:
                        log("budget spent: stopping the rounds")
                        raise TimeoutError("budget")
                    cpu0 = cpu_seconds(gateways[name]) if name in gateways else None
                    row = loader.run(targets[name], model, request, conc, 2.0, window)
                    row |= {"target": name, "round": rnd}
                    if cpu0 is not None:  # the whole run: warm-up, window and drain
                        row["gateway_cpu_s"] = round(cpu_seconds(gateways[name]) - cpu0, 3)
                    results.append("runs", row)
                    log(
                        f"{name:>12} c={conc:<4} r={rnd} {row['output_tok_s']:>9.1f} tok/s "
                        f"TTFT p50 {row['ttft_p50_ms']:.2f} ms p99 {row['ttft_p99_ms']:.2f} "
                        f"ITL p50 {row['itl_p50_ms']:.2f} ms errors {row['errors']}"
                    )
    except TimeoutError:
        results.put("stopped_early", True)
    finally:
        loader.close()
        results.put("summary", overhead_summary(results.data.get("runs", []), list(targets)))
        last = targets[list(gateways)[-1]]
        results.put("gateway_metrics_sample", (await metrics_text(last))[:4000])
    results.put("complete", not results.data.get("stopped_early", False))


def overhead_summary(runs: list[dict[str, Any]], targets: list[str]) -> list[dict[str, Any]]:
    """Per concurrency: medians over rounds, the throughput ratio and the added TTFT p50
    (median of the per-round differences); targets >= 0.98 and <= 1 ms."""
    out = []
    direct = targets[0]
    for conc, gateway in itertools.product(sorted({r["concurrency"] for r in runs}), targets[1:]):
        mine = {
            t: [r for r in runs if r["concurrency"] == conc and r["target"] == t]
            for t in (direct, gateway)
        }
        if not mine[direct] or not mine[gateway]:
            continue
        row: dict[str, Any] = {"concurrency": conc, "gateway": gateway}
        cpu = [r["gateway_cpu_s"] for r in mine[gateway] if "gateway_cpu_s" in r]
        if cpu:
            row[f"{gateway}_cpu_s"] = round(statistics.median(cpu), 3)
        for t, rs in mine.items():
            for key in ("output_tok_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms"):
                row[f"{t}_{key}"] = round(statistics.median(r[key] for r in rs), 3)
            row[f"{t}_errors"] = sum(r["errors"] for r in rs)
        pairs = list(zip(mine[direct], mine[gateway], strict=False))
        ratio = row[f"{gateway}_output_tok_s"] / max(row[f"{direct}_output_tok_s"], 1e-9)
        added = statistics.median(g["ttft_p50_ms"] - d["ttft_p50_ms"] for d, g in pairs)
        row |= {
            "throughput_ratio": round(ratio, 4),
            "added_ttft_p50_ms": round(added, 3),
            "throughput_ok": ratio >= 0.98,
            "ttft_ok": added <= 1.0,
        }
        out.append(row)
    return out


def cpu_seconds(proc: Proc) -> float:
    """User + system CPU seconds of a process and its children (a gateway's workers)."""
    try:
        root = psutil.Process(proc.popen.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total
    except psutil.Error:
        return 0.0


# -- KV-aware routing -----------------------------------------------------------------------
def chats(
    seed: int, groups: int, users: int, rounds: int, system_len: int, history_len: int,
    max_tokens: int, question_len: int = 50, answer_len: int = 100,
) -> list[list[RequestSpec]]:  # fmt: skip
    """One chain per user (benchmarks/kv_routing/real_engines.py's workload): groups share a
    system prompt, each user has a private history, rounds are asked one after another."""
    rng = random.Random(seed)
    chains = []
    for group in range(groups):
        system = tagged(f"run {seed} group {group} system prompt", system_len, rng)
        for user in range(users):
            history = tagged(f"user {group}.{user} notes", history_len, rng)
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": history},
                {"role": "assistant", "content": words(answer_len, rng)},
            ]
            chain = []
            for turn in range(rounds):
                messages.append({"role": "user", "content": tagged(f"q{turn}", question_len, rng)})
                chain.append(RequestSpec(messages=tuple(messages), max_tokens=max_tokens))
                messages = [*messages, {"role": "assistant", "content": words(answer_len, rng)}]
            chains.append(chain)
    return chains


async def _counters(urls: list[str]) -> tuple[float, float]:
    texts = await asyncio.gather(*(metrics_text(u) for u in urls))
    total = [parse_counters(t) for t in texts]
    return sum(c.queries for c in total), sum(c.hits for c in total)


async def _reset(urls: list[str]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.post(url + "/reset_prefix_cache") as r:
                if r.status != 200:
                    log(f"reset_prefix_cache {url}: HTTP {r.status}")


async def routing(
    run: Run,
    model: str,
    engines: int,
    utilization: float,
    kv_gib: float | None,
    concurrent_start: bool,
    start_cap_s: float,
    workload: dict[str, int],
    repeats: int,
    gpus_per_engine: int = 0,
) -> None:
    """`engines` vLLM engines; a kv_aware and a round_robin gateway over them; each policy
    runs the same multi-turn workload from empty caches. `gpus_per_engine` 0: the engines
    share GPU 0 (issue 11, one H200); N >= 1 (issue 12, x2/x4 machines): engine i sees only
    GPUs i*N .. i*N+N-1 (CUDA_VISIBLE_DEVICES) and runs TP N over them."""
    results = run.results("routing")
    kv_bytes = None if kv_gib is None else int(kv_gib * GiB)
    need_gpus(max(1, engines * gpus_per_engine), run.fake)

    def devices(i: int) -> dict[str, str]:
        if gpus_per_engine < 1:
            return {}
        first = i * gpus_per_engine
        return {"CUDA_VISIBLE_DEVICES": ",".join(str(first + g) for g in range(gpus_per_engine))}

    specs = [
        EngineSpec(
            model, str(run.models / model), 4096, utilization, kv_cache_memory_bytes=kv_bytes,
            kv_events_port=free_port(), fake=run.fake, env=devices(i),
            tp=max(1, gpus_per_engine),
        )
        for i in range(engines)
    ]  # fmt: skip
    results.put("settings", {
        "model": model, "engines": engines, "gpu_memory_utilization": utilization,
        "kv_cache_gib": kv_gib, "concurrent_start": concurrent_start, "workload": workload,
        "gpus_per_engine": gpus_per_engine,
        "devices": [s.env.get("CUDA_VISIBLE_DEVICES", "shared") for s in specs],
    })  # fmt: skip
    procs = []
    ready: list[float] = []
    cap = min(start_cap_s, run.budget.left() - 60)
    deadline = time.monotonic() + cap
    for i, spec in enumerate(specs):
        procs.append(start_engine(run.procs, spec, f"engine-{model}-{i}"))
        if not concurrent_start:
            ready.append(await wait_ready(procs[-1], spec.url, deadline - time.monotonic()))
    if concurrent_start:
        ready = list(await asyncio.gather(
            *(wait_ready(p, s.url, cap) for p, s in zip(procs, specs, strict=True))
        ))  # fmt: skip
    results.put("ready_s", ready)
    results.put("startup", [vllm_log.parse(p.text()).as_dict() for p in procs])
    work = run.work
    tok = specs[0].model_dir
    kv_state = write_fleet(
        work / "kv_aware", model, "kv_aware", specs, tokenizer=tok, max_model_len=4096
    )
    rr_specs = [replace(s, kv_events_port=None) for s in specs]
    rr_state = write_fleet(
        work / "round_robin", model, "round_robin", rr_specs, tokenizer=tok, max_model_len=4096
    )
    urls = {}
    for policy, state in (("kv_aware", kv_state), ("round_robin", rr_state)):
        proc, urls[policy] = start_gateway(run.procs, f"gateway-{policy}", state, 1)
        await wait_ready(proc, urls[policy], 60)
    await asyncio.sleep(2.0)  # the kv_aware gateway's subscribers connect
    engine_urls = [s.url for s in specs]
    async with OpenAIClient(engine_urls[0]) as client:  # warm-up: kernels, not caches
        warm = chats(999, 1, 8, 1, 200, 200, 8)
        await run_load(
            lambda s: client.send(model, s), warm, LoadShape(concurrency=8), time_limit_s=60
        )
    planned = 2 * repeats
    for repeat in range(repeats):
        order = ("kv_aware", "round_robin") if repeat % 2 == 0 else ("round_robin", "kv_aware")
        for policy in order:
            left = run.budget.left() - 20
            if left < 30:
                results.put("stopped_early", True)
                break
            share = left / planned  # what is left, shared by the runs still to come
            planned -= 1
            row = await _policy_run(urls[policy], engine_urls, model, workload, 100 * repeat, share)
            row |= {"policy": policy, "repeat": repeat}
            results.append("runs", row)
            log(f"{policy:>12} r={repeat} {row}")
    results.put("summary", routing_summary(results.data.get("runs", [])))
    results.put("complete", not results.data.get("stopped_early", False))


async def _policy_run(
    url: str, engines: list[str], model: str, w: dict[str, int], seed: int, limit_s: float
) -> dict[str, Any]:
    await _reset(engines)
    await asyncio.sleep(1.0)
    q0, h0 = await _counters(engines)
    chains = chats(seed, w["groups"], w["users"], w["rounds"], w["system_len"],
                   w["history_len"], w["max_tokens"])  # fmt: skip
    async with OpenAIClient(url, max_connections=len(chains) + 8) as client:

        async def send(spec: RequestSpec) -> RequestResult:
            return await client.send(model, spec)

        done = await run_load(
            send,
            chains,
            LoadShape(concurrency=len(chains)),
            time_limit_s=min(limit_s, w["limit_s"]),
        )
    q1, h1 = await _counters(engines)
    s = summarize(done.results, done.duration_s)
    return {
        "requests": s.requests, "completed": s.completed, "failed": s.failed,
        "timed_out": done.timed_out, "duration_s": round(s.duration_s, 2),
        "output_tok_s": round(s.output_throughput, 1),
        "total_tok_s": round(s.total_token_throughput, 1),
        "prompt_tokens": s.prompt_tokens,
        "ttft_p50_ms": round(s.ttft.p50 * 1000, 2), "ttft_p99_ms": round(s.ttft.p99 * 1000, 2),
        "itl_p50_ms": round(s.itl.p50 * 1000, 2), "e2e_p50_ms": round(s.e2e.p50 * 1000, 1),
        "hit_rate": round((h1 - h0) / (q1 - q0), 4) if q1 > q0 else None,
        "queried_tokens": q1 - q0, "hit_tokens": h1 - h0, "errors": list(s.errors),
    }  # fmt: skip


def routing_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for policy in ("kv_aware", "round_robin"):
        mine = [r for r in runs if r["policy"] == policy]
        if not mine:
            continue
        queried = sum(r["queried_tokens"] for r in mine)
        out[policy] = {
            "runs": len(mine),
            "hit_rate": round(sum(r["hit_tokens"] for r in mine) / queried, 4) if queried else None,
            **{
                k: round(statistics.median(r[k] for r in mine), 2)
                for k in ("output_tok_s", "total_tok_s", "ttft_p50_ms", "ttft_p99_ms", "duration_s")
            },
        }
    if "kv_aware" in out and "round_robin" in out:
        kv, rr = out["kv_aware"], out["round_robin"]
        out["throughput_ratio"] = round(kv["total_tok_s"] / max(rr["total_tok_s"], 1e-9), 3)
        out["ttft_p50_ratio"] = round(kv["ttft_p50_ms"] / max(rr["ttft_p50_ms"], 1e-9), 3)
    return out
