"""KV-aware routing at scale on simulated engines: a rate sweep to saturation for kv_aware,
round_robin and prefix_hash (deepfleet gateways) and sglang-router's cache_aware, all over the
same 16 simulated vLLM engines.

Workload: SGLang's generated shared prefix (groups of prompts sharing a long system prompt),
sized so that the prefixes exceed one replica's KV cache but fit in the fleet's. Every step
uses the same prompts for every policy; every engine's prefix cache is emptied before each
step. Throughput at saturation is the highest output throughput a policy reached in its sweep.

    flock /tmp/deepfleet-heavy.lock .venv/bin/python benchmarks/kv_routing/sim_sweep.py
        # ~20 min on 2 cores; --quick: a smoke run

Writes benchmarks/results/kv_routing_sim.json. Needs `pip install sglang-router==0.3.2`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    RESULTS,
    Processes,
    Replica,
    delta,
    free_run,
    machine,
    processes,
    publish_resets,
    reset_caches,
    scrape,
    start_gateway,
    summary_row,
    wait_ready,
    write_gateway_state,
)

from deepfleet.bench.benchmark import run_benchmark
from deepfleet.bench.client import OpenAIClient
from deepfleet.bench.runner import LoadShape
from deepfleet.bench.workloads import shared_prefix
from deepfleet.catalog import bundled
from deepfleet.fleet.ports import free_port

MODEL = "sim"
SIM_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
POLICIES = ("kv_aware", "round_robin", "prefix_hash", "sglang_cache_aware")
SATURATED = 0.9  # completion rate / offered rate below which a step counts as saturated


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", type=int, default=16)
    p.add_argument("--gpu", default="H200")
    p.add_argument("--speed", type=float, default=0.1, help="simulated time scale")
    p.add_argument("--kv-tokens", type=int, default=16384, help="KV cache of one replica")
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--system-len", type=int, default=2048)
    p.add_argument("--question-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--rates", default="4,8,16,24,32")
    p.add_argument("--seconds-per-step", type=float, default=20.0)
    p.add_argument("--requests-per-group", type=int, default=10, help="per step, at least")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--quick", action="store_true", help="4 engines, 2 rates, few requests")
    p.add_argument("--out", type=Path, default=RESULTS / "kv_routing_sim.json")
    args = p.parse_args()
    if args.quick:
        args.engines, args.groups, args.rates = 4, 16, "2,8"
        args.seconds_per_step, args.requests_per_group = 8.0, 4
    return args


async def main(args: argparse.Namespace, group: Processes) -> None:
    folder = str(bundled.default_target())
    rates = [float(r) for r in args.rates.split(",")]
    policies = args.policies.split(",")
    work = group.logs
    # Below the ephemeral range (32768+): an engine reconnecting to an unbound ephemeral
    # port can self-connect and hold it.
    sim_port, events_port = free_run(args.engines, 21000), free_run(args.engines, 23000)
    engines = [f"http://127.0.0.1:{sim_port + i}" for i in range(args.engines)]
    out: dict[str, Any] = {"config": {**vars(args), "out": str(args.out), "sim_model": SIM_MODEL,
                                      "tokenizer": folder, "started_unix": time.time(),
                       "machine": machine()},
                           "runs": {}}  # fmt: skip
    group.start(
        "sim",
        [sys.executable, "-m", "deepfleet", "sim", "--model", SIM_MODEL, "--gpu", args.gpu,
         "--engines", str(args.engines), "--port", str(sim_port), "--speed", str(args.speed),
         "--kv-tokens", str(args.kv_tokens), "--served-model-name", MODEL, "--tokenizer",
         folder, "--no-reasoning-parser", "--block-size", "16",
         "--kv-events", f"tcp://127.0.0.1:{events_port}"],
    )  # fmt: skip
    await wait_ready(engines)
    targets: dict[str, str] = {}
    for policy in policies:
        if policy == "sglang_cache_aware":
            port = free_port()
            group.start(
                policy,
                [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1",
                 "--port", str(port), "--prometheus-host", "127.0.0.1", "--prometheus-port",
                 str(free_port()), "--policy", "cache_aware", "--log-level", "warn",
                 "--worker-urls", *engines],
            )  # fmt: skip
            targets[policy] = f"http://127.0.0.1:{port}"
            continue
        replicas = [
            Replica(f"{MODEL}-{i}", url, events_port + i if policy == "kv_aware" else None)
            for i, url in enumerate(engines)
        ]
        state = write_gateway_state(
            work / policy, MODEL, policy, replicas, tokenizer=folder, block_size=16
        )
        targets[policy] = start_gateway(group, policy, state)
    await wait_ready(list(targets.values()), within_s=60)
    await wait_ready(list(targets.values()), "/v1/models", within_s=60)
    await asyncio.sleep(2.0)  # gateways bind the engines' event ports, scrape load
    seen: dict[str, dict[str, float]] = {}
    for step, rate in enumerate(rates):
        requests = max(args.groups * args.requests_per_group, int(rate * args.seconds_per_step))
        params = {"groups": str(args.groups), "prompts_per_group": str(requests // args.groups + 1),
                  "system_len": str(args.system_len), "question_len": str(args.question_len),
                  "output_len": str(args.output_len)}  # fmt: skip
        workload = shared_prefix.build(requests, params, random.Random(1000 + step))
        for policy in policies:
            runs = out["runs"].setdefault(policy, [])
            if runs and runs[-1]["saturated"]:
                continue  # this policy's sweep ended
            await reset_caches(engines)
            if not await publish_resets(engines, MODEL):
                print("warning: an engine refused the request that publishes its reset")
            await asyncio.sleep(1.0)
            async with OpenAIClient(targets[policy]) as client:
                report = await run_benchmark(
                    client, MODEL, workload, LoadShape(rate=rate, seed=step), target=policy,
                    time_limit_s=requests / rate + 120.0,
                    metrics_urls=[u + "/metrics" for u in engines],
                )  # fmt: skip
            row = {"rate": rate, **summary_row(report)}
            row["saturated"] = bool(row["failed"] or row["completion_req_s"] < SATURATED * rate)
            if policy != "sglang_cache_aware":
                now = await scrape(targets[policy], "deepfleet_routing", "_total")
                row["gateway"] = delta(now, seen.get(policy, {}))
                seen[policy] = now
            runs.append(row)
            print(json.dumps({"policy": policy, **{k: v for k, v in row.items()
                              if k != "gateway"}}), flush=True)  # fmt: skip
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(derive(out), indent=1))
        if all(r[-1]["saturated"] for r in out["runs"].values()):
            break
    print(json.dumps(derive(out)["summary"], indent=1))


def derive(out: dict[str, Any]) -> dict[str, Any]:
    """Saturation throughput per policy, TTFT p99 at the rates all policies sustained, ratios."""
    summary: dict[str, Any] = {}
    for policy, runs in out["runs"].items():
        best = max(runs, key=lambda r: r["completion_output_tok_s"])
        summary[policy] = {
            "saturation_output_tok_s": best["completion_output_tok_s"],
            "saturation_req_s": best["completion_req_s"],
            "at_rate": best["rate"],
            "highest_sustained_rate": max(
                (r["rate"] for r in runs if not r["saturated"]), default=None
            ),
            # Output over each step's whole duration (first arrival to last completion, ramp
            # and drain included): below the completion-span rate, which overstates short
            # unsaturated steps whose first completion comes late.
            "best_whole_step_output_tok_s": max(r["output_throughput"] for r in runs),
            "ttft_p99_s_by_rate": {str(r["rate"]): r["ttft_p99_s"] for r in runs},
            "hit_rate_by_rate": {str(r["rate"]): r["prefix_cache_hit_rate"] for r in runs},
        }
    rr = summary.get("round_robin")
    sg = summary.get("sglang_cache_aware")
    kv = summary.get("kv_aware")
    if kv and rr:
        kv["throughput_vs_round_robin"] = round(
            kv["saturation_output_tok_s"] / max(rr["saturation_output_tok_s"], 1e-9), 2
        )
    if kv and rr:
        kv["whole_step_vs_round_robin"] = round(
            kv["best_whole_step_output_tok_s"] / max(rr["best_whole_step_output_tok_s"], 1e-9), 2
        )
    if kv and sg:
        common = [r for r in kv["ttft_p99_s_by_rate"] if r in sg["ttft_p99_s_by_rate"]]
        kv["ttft_p99_vs_sglang_by_rate"] = {
            r: round(kv["ttft_p99_s_by_rate"][r] / max(sg["ttft_p99_s_by_rate"][r], 1e-9), 2)
            for r in common
        }
        kv["throughput_vs_sglang"] = round(
            kv["saturation_output_tok_s"] / max(sg["saturation_output_tok_s"], 1e-9), 2
        )
    return {**out, "summary": summary}


def run() -> None:
    args = parse()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with processes(Path(tempfile.mkdtemp(prefix="kv-sim-sweep-"))) as group:
        asyncio.run(main(args, group))


if __name__ == "__main__":
    run()
