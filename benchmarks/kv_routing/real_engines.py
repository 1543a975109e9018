"""KV-aware routing on real engines: 2 vLLM CPU replicas of the bundled model, started by
`deepfleet up -f fleet.yaml` with `routing: kv_aware`, against round robin over the same
engines (a second gateway reading the same fleet with `routing: round_robin`), in one run.

Workload: multi-turn chats, groups of users sharing a 1,000-token system prompt, each user with
a private history, asking `rounds` questions one after another (answers are appended as fixed
text, so both policies see the same prompts). Each policy runs the whole workload after every
engine's prefix cache was emptied (vLLM's dev-mode /reset_prefix_cache), `--repeats` times in
alternating order; hit rates come from vLLM's own counters (vllm:prefix_cache_hits/queries),
TTFT from the client.

Each replica's KV cache (`--kv-blocks`, default 256 blocks of 128 tokens = 32,768 tokens) is
smaller than the workload's working set (~50,000 tokens: 4 system prompts and 16 private
histories) and larger than half of it: the regime where routing decides the hit rate. With
caches that hold everything (`--kv-blocks 0`: 2 GiB, ~93,000 tokens each) both replicas end up
holding every conversation, and round robin loses only turns that land on the other replica.

    flock /tmp/deepfleet-heavy.lock .venv/bin/python benchmarks/kv_routing/real_engines.py \
        --repeats 1                                                 # ~12 min on 2 cores

Writes benchmarks/results/kv_routing_real.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    RESULTS,
    Processes,
    counters,
    machine,
    processes,
    reset_caches,
    scrape,
    start_gateway,
    wait_ready,
)

from deepfleet.bench.client import OpenAIClient, RequestResult, RequestSpec
from deepfleet.bench.runner import LoadShape, run_load
from deepfleet.bench.stats import summarize
from deepfleet.bench.text import tagged, words
from deepfleet.catalog import bundled
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import ReplicaState, read_state, write_state

MODEL = "smol"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--users-per-group", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--system-len", type=int, default=1000)
    p.add_argument("--history-len", type=int, default=2000)
    p.add_argument("--question-len", type=int, default=50)
    p.add_argument("--answer-len", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--kv-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE per replica")
    p.add_argument(
        "--kv-blocks",
        type=int,
        default=256,
        help="KV cache blocks per replica (vLLM's --num-gpu-blocks-override, 128 tokens each "
        "on the CPU build); 0: all of --kv-gib",
    )
    p.add_argument("--repeats", type=int, default=2, help="runs per policy, order alternating")
    p.add_argument("--out", type=Path, default=RESULTS / "kv_routing_real.json")
    return p.parse_args()


def chats(args: argparse.Namespace, seed: int) -> list[list[RequestSpec]]:
    """One chain per user: its rounds, each prompt repeating the conversation so far."""
    rng = random.Random(seed)
    chains = []
    for group in range(args.groups):
        system = tagged(f"run {seed} group {group} system prompt", args.system_len, rng)
        for user in range(args.users_per_group):
            history = tagged(f"user {group}.{user} notes", args.history_len, rng)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": history}]
            messages.append({"role": "assistant", "content": words(args.answer_len, rng)})
            chain = []
            for turn in range(args.rounds):
                messages.append(
                    {"role": "user", "content": tagged(f"q{turn}", args.question_len, rng)}
                )
                chain.append(RequestSpec(messages=tuple(messages), max_tokens=args.max_tokens))
                answer = {"role": "assistant", "content": words(args.answer_len, rng)}
                messages = [*messages, answer]
            chains.append(chain)
    return chains


def fleet_yaml(args: argparse.Namespace, work: Path, port: int) -> Path:
    engine_args = {"num_gpu_blocks_override": args.kv_blocks} if args.kv_blocks else {}
    config = {
        "models": [{
            "name": MODEL, "source": "bundled", "replicas": 2, "routing": "kv_aware",
            "max_model_len": 8192, "engine_args": engine_args,
            "engine_env": {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": str(args.kv_gib)},
        }],
        "gateway": {"port": port},
        "state_dir": str(work / "state"),
    }  # fmt: skip
    path = work / "fleet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def deepfleet(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepfleet", *argv], capture_output=True, text=True, timeout=timeout
    )


def round_robin_state(state_dir: Path, target: Path) -> Path:
    """The fleet as the kv_aware gateway sees it, with round robin and no KV events."""
    state = read_state(state_dir / "fleet.json")
    assert state is not None
    state.models = [dataclasses.replace(m, routing="round_robin") for m in state.models]
    state.replicas = [dataclasses.replace(r, kv_events_port=None) for r in state.replicas]
    target.mkdir(parents=True, exist_ok=True)
    write_state(target / "fleet.json", state)
    (target / "gateway.json").write_text(json.dumps({"keys_db": str(target / "keys.db")}))
    return target / "fleet.json"


async def run_policy(
    url: str, engines: list[str], chains: list[list[RequestSpec]]
) -> dict[str, Any]:
    await reset_caches(engines)
    await asyncio.sleep(1.0)
    before = await counters(engines)
    results: list[RequestResult] = []
    async with OpenAIClient(url) as client:

        async def send(spec: RequestSpec) -> RequestResult:
            return await client.send(MODEL, spec)

        run = await run_load(
            send, chains, LoadShape(concurrency=len(chains)), time_limit_s=900,
            on_result=results.append,
        )  # fmt: skip
    after = await counters(engines)
    s = summarize(run.results, run.duration_s)
    delta = (after - before) if before is not None and after is not None else None
    return {
        "requests": s.requests, "failed": s.failed, "duration_s": round(s.duration_s, 1),
        "ttft_p50_s": round(s.ttft.p50, 4), "ttft_p90_s": round(s.ttft.p90, 4),
        "e2e_p50_s": round(s.e2e.p50, 4), "prompt_tokens": s.prompt_tokens,
        "hit_rate": None if delta is None else round(delta.hit_rate or 0.0, 4),
        "queried_tokens": None if delta is None else delta.queries,
        "hit_tokens": None if delta is None else delta.hits, "errors": list(s.errors),
    }  # fmt: skip


async def main(args: argparse.Namespace, group: Processes, work: Path) -> None:
    bundled.prepare()
    port = free_port()
    state_dir = work / "state"
    config = fleet_yaml(args, work, port)
    up = deepfleet("up", "-f", str(config), "--detach", timeout=900)
    if up.returncode != 0:
        raise SystemExit(f"deepfleet up failed:\n{up.stdout}\n{up.stderr}")
    try:
        state = read_state(state_dir / "fleet.json")
        assert state is not None
        engines = [r.url for r in state.replicas if r.state is ReplicaState.READY]
        kv_url = f"http://127.0.0.1:{port}"
        rr_url = start_gateway(group, "round_robin", round_robin_state(state_dir, work / "rr"))
        await wait_ready([kv_url, rr_url])
        await asyncio.sleep(2.0)
        urls = {"kv_aware": kv_url, "round_robin": rr_url}
        out: dict[str, Any] = {
            "config": {**{k: str(v) for k, v in vars(args).items()}, "engines": engines,
                       "fleet_yaml": config.read_text(), "started_unix": time.time(),
                       "machine": machine()},
            "runs": [],
        }  # fmt: skip
        for repeat in range(args.repeats):
            order = ("kv_aware", "round_robin") if repeat % 2 == 0 else ("round_robin", "kv_aware")
            for policy in order:
                chains = chats(args, seed=100 * repeat + (policy == "round_robin"))
                row = {"policy": policy, "repeat": repeat,
                       **await run_policy(urls[policy], engines, chains)}  # fmt: skip
                out["runs"].append(row)
                print(json.dumps(row), flush=True)
        out["gateway_metrics"] = {
            **await scrape(kv_url, "deepfleet_routing_decisions_total"),
            **await scrape(kv_url, "deepfleet_routing_", "_blocks_total"),
            **await scrape(kv_url, "deepfleet_kv_index_blocks"),
        }
        out["summary"] = summary(out["runs"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
        print(json.dumps(out["summary"], indent=1))
    finally:
        deepfleet("down", "--state-dir", str(state_dir), timeout=180)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for policy in ("kv_aware", "round_robin"):
        mine = [r for r in runs if r["policy"] == policy]
        hits = sum(r["hit_tokens"] or 0 for r in mine)
        queries = sum(r["queried_tokens"] or 0 for r in mine)
        ttfts = sorted(r["ttft_p50_s"] for r in mine)
        out[policy] = {
            "hit_rate": round(hits / queries, 4) if queries else None,
            "ttft_p50_s_median_of_runs": ttfts[len(ttfts) // 2] if ttfts else None,
        }
    kv, rr = out["kv_aware"], out["round_robin"]
    if kv["hit_rate"] and rr["hit_rate"]:
        out["hit_rate_ratio"] = round(kv["hit_rate"] / rr["hit_rate"], 2)
    if kv["ttft_p50_s_median_of_runs"] and rr["ttft_p50_s_median_of_runs"]:
        out["ttft_p50_ratio"] = round(
            kv["ttft_p50_s_median_of_runs"] / rr["ttft_p50_s_median_of_runs"], 2
        )
    return out


def run() -> None:
    args = parse()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="kv-real-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with processes(work) as group:
        asyncio.run(main(args, group, work))


if __name__ == "__main__":
    run()
