"""KV-aware routing through 2 gateways vs 1 (issue 23 item 3): the same hit rate.

One fleet started by `deepfleet up`: 2 vLLM CPU replicas of the bundled model, `routing:
kv_aware`, `gateway.instances: 2` (HAProxy on PORT, gateway 0 on PORT+1, gateway 1 on PORT+2,
and the node's KV event relay every gateway follows). The same kind of workload runs twice per
repeat, in alternating order, each time from emptied prefix caches (vLLM's dev-mode
/reset_prefix_cache, then fresh prompts: a new seed):
- `one`: every request straight to gateway 0 (one gateway, as without `instances`);
- `two`: every request through HAProxy, which spreads them over both gateways (leastconn), so
  each gateway routes turns of conversations whose earlier turns the other one routed.
Hit rates come from vLLM's own counters (vllm:prefix_cache_hits / queries, in tokens), summed
over both engines, before and after each run; the routing decisions each gateway made come
from its /metrics.

Workload: multi-turn chats as in benchmarks/kv_routing/real_engines.py (groups of users
sharing a system prompt, each user with a private history, `rounds` questions one after
another; answers appended as fixed text), with KV caches (`--kv-blocks`) smaller than the
working set, so where a turn lands decides whether it hits.

Then the catch-up check: gateway 1 is SIGKILLed, its supervisor starts it again, and with no
request in between its KV index must hold what gateway 0's holds (the relay's snapshot: KV
events are deltas, and no engine announces again what it already cached).

    flock /tmp/deepfleet-heavy.lock env PYTHONPATH=src .venv/bin/python \
        benchmarks/kvcache/two_gateways.py --repeats 2        # ~15 min on 2 cores

Writes benchmarks/results/kvcache/two_gateways.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import Fleet, running_fleet  # noqa: E402

from deepfleet.bench.client import OpenAIClient, RequestResult, RequestSpec  # noqa: E402
from deepfleet.bench.metrics import read_counters  # noqa: E402
from deepfleet.bench.runner import LoadShape, RunResult, run_load  # noqa: E402
from deepfleet.bench.stats import summarize  # noqa: E402
from deepfleet.bench.text import tagged, words  # noqa: E402
from deepfleet.fleet.state import ReplicaState, read_state  # noqa: E402

MODEL = "smol"
RESULTS = ROOT / "benchmarks" / "results" / "kvcache"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--users-per-group", type=int, default=4)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--system-len", type=int, default=1000)
    p.add_argument("--history-len", type=int, default=1500)
    p.add_argument("--question-len", type=int, default=50)
    p.add_argument("--answer-len", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument(
        "--kv-blocks", type=int, default=192, help="KV blocks per replica (128 tokens), >= 33"
    )
    p.add_argument("--repeats", type=int, default=2, help="runs per mode, order alternating")
    p.add_argument(
        "--modes", default="one,two,restart",
        help="one: gateway 0; two: HAProxy over both; restart: two, gateway 1 SIGKILLed halfway",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "two_gateways.json")
    return p.parse_args(argv)


def config(args: argparse.Namespace) -> str:
    engine_args = {"num_gpu_blocks_override": args.kv_blocks} if args.kv_blocks else {}
    fleet = {
        "models": [{
            "name": MODEL, "source": "bundled", "replicas": 2, "routing": "kv_aware",
            "max_model_len": 4096, "engine_args": engine_args,
            "engine_env": {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"},
        }],
        "gateway": {"instances": 2},
    }  # fmt: skip
    return yaml.safe_dump(fleet, sort_keys=False)


def chats(args: argparse.Namespace, seed: int) -> list[list[RequestSpec]]:
    """One chain per user: its rounds, each prompt repeating the conversation so far."""
    rng = random.Random(seed)
    chains = []
    for group in range(args.groups):
        system = tagged(f"run {seed} group {group} system prompt", args.system_len, rng)
        for user in range(args.users_per_group):
            history = tagged(f"run {seed} user {group}.{user} notes", args.history_len, rng)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": history}]
            messages.append({"role": "assistant", "content": words(args.answer_len, rng)})
            chain = []
            for turn in range(args.rounds):
                question = tagged(f"q{turn}", args.question_len, rng)
                messages.append({"role": "user", "content": question})
                chain.append(RequestSpec(messages=tuple(messages), max_tokens=args.max_tokens))
                answer = {"role": "assistant", "content": words(args.answer_len, rng)}
                messages = [*messages, answer]
            chains.append(chain)
    return chains


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> dict[str, float]:
    """Samples of gateway metric `name` (labels text -> value)."""
    async with session.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :] or "-"] = float(value)
    return out


async def decisions(session: aiohttp.ClientSession, url: str) -> float:
    return sum((await metric(session, url, "deepfleet_routing_decisions_total")).values())


async def empty_caches(session: aiohttp.ClientSession, engines: list[str], key: str) -> None:
    """Reset every engine's prefix cache, then a prompt shorter than a block so that the
    AllBlocksCleared event goes out now (vLLM publishes events with a step's output)."""
    for url in engines:
        async with session.post(url + "/reset_prefix_cache") as r:
            if r.status != 200:
                raise SystemExit(f"{url}/reset_prefix_cache: {r.status} (VLLM_SERVER_DEV_MODE?)")
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
        async with session.post(
            url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            await r.read()
    await asyncio.sleep(1.5)


async def run_mode(
    mode: str, fleet: Fleet, gateways: list[str], engines: list[str], key: str, seed: int,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """One run in two phases (the first half of every chat's turns, then the rest); mode
    `restart` SIGKILLs gateway 1 between them and goes on once HAProxy sends to it again."""
    url = gateways[0] if mode == "one" else fleet.url
    metrics = [e + "/metrics" for e in engines]
    async with aiohttp.ClientSession() as session:
        await empty_caches(session, engines, key)
        before = await read_counters(session, metrics)
        routed_before = [await decisions(session, g) for g in gateways]
    chains = chats(args, seed)
    half = args.rounds // 2
    first = await load(url, [c[:half] for c in chains])
    restarted_s = None
    async with aiohttp.ClientSession() as session:
        middle = await read_counters(session, metrics)
        if mode == "restart":
            restarted_s = await restart_gateway1(fleet, gateways[1], session)
        routed_middle = [await decisions(session, g) for g in gateways]
    second = await load(url, [c[half:] for c in chains])
    async with aiohttp.ClientSession() as session:
        after = await read_counters(session, metrics)
        routed_after = [await decisions(session, g) for g in gateways]
    assert before is not None and middle is not None and after is not None, "no engine /metrics"
    results = [*first.results, *second.results]
    s = summarize(results, first.duration_s + second.duration_s)
    whole, late = after - before, after - middle
    return {
        "mode": mode, "seed": seed, "requests": s.requests, "failed": s.failed,
        "duration_s": round(s.duration_s, 1), "ttft_p50_s": round(s.ttft.p50, 4),
        "hit_rate": round(whole.hit_rate or 0.0, 4), "queried_tokens": whole.queries,
        "hit_tokens": whole.hits, "hit_rate_second_half": round(late.hit_rate or 0.0, 4),
        "routed_by_gateway": [a - b for a, b in zip(routed_after, routed_before, strict=True)],
        "routed_second_half": [a - b for a, b in zip(routed_after, routed_middle, strict=True)],
        "gateway1_restart_s": restarted_s, "errors": list(s.errors),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip


async def load(url: str, chains: list[list[RequestSpec]]) -> RunResult:
    async with OpenAIClient(url) as client:

        async def send(spec: RequestSpec) -> RequestResult:
            return await client.send(MODEL, spec)

        return await run_load(send, chains, LoadShape(concurrency=len(chains)), time_limit_s=900)


def gateway1_pid(fleet: Fleet) -> int:
    state = read_state(fleet.state_dir / "fleet.json")
    assert state is not None
    pid = next(s.pid for s in state.services if s.replica_id == "gateway-1")
    assert pid is not None, "gateway-1 has no pid"
    return pid


async def restart_gateway1(fleet: Fleet, url: str, session: aiohttp.ClientSession) -> float:
    """SIGKILL gateway 1, wait for its supervisor to start it again and for HAProxy's checks
    to take it back (rise 2, every second); the seconds that took."""
    started = time.monotonic()
    old = gateway1_pid(fleet)
    os.kill(old, signal.SIGKILL)
    while time.monotonic() - started < 120:
        await asyncio.sleep(0.5)
        try:
            async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(2)) as r:
                if r.status == 200 and gateway1_pid(fleet) != old:
                    break
        except (aiohttp.ClientError, TimeoutError):
            continue
    await asyncio.sleep(3.0)
    return round(time.monotonic() - started, 1)


async def catch_up(fleet: Fleet, gateways: list[str]) -> dict[str, Any]:
    """SIGKILL gateway 1; once its supervisor started it again, with no request sent, its
    index must know the blocks gateway 0's knows."""
    old_pid = gateway1_pid(fleet)
    async with aiohttp.ClientSession() as session:
        before = await metric(session, gateways[0], "deepfleet_kv_index_blocks")
        os.kill(old_pid, signal.SIGKILL)
        started = time.monotonic()
        restarted: dict[str, float] = {}
        while time.monotonic() - started < 120:
            await asyncio.sleep(0.5)
            try:
                restarted = await metric(session, gateways[1], "deepfleet_kv_index_blocks")
            except (aiohttp.ClientError, TimeoutError):
                continue
            if sum(restarted.values()) >= sum(before.values()) > 0:
                break
        resyncs = await metric(session, gateways[1], "deepfleet_kv_event_resyncs_total")
        gw0 = await metric(session, gateways[0], "deepfleet_kv_index_blocks")
    return {
        "gateway0_index_blocks": sum(gw0.values()),
        "restarted_gateway1_index_blocks": sum(restarted.values()),
        "catch_up_s": round(time.monotonic() - started, 1),
        "gateway1_resyncs": resyncs,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("one", "two", "restart"):
        mine = [r for r in runs if r["mode"] == mode]
        hits = sum(r["hit_tokens"] for r in mine)
        queries = sum(r["queried_tokens"] for r in mine)
        if mine:
            out[mode] = {"hit_rate": round(hits / queries, 4) if queries else None,
                         "runs": [r["hit_rate"] for r in mine],
                         "second_half": [r["hit_rate_second_half"] for r in mine]}  # fmt: skip
    one = out.get("one", {}).get("hit_rate")
    for mode in ("two", "restart"):
        other = out.get(mode, {}).get("hit_rate")
        if one and other is not None:
            out[mode]["relative_to_one"] = round((other - one) / one, 4)
            out[mode]["within_5_percent_of_one"] = abs(other - one) <= 0.05 * one
    return out


async def measure(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    state = read_state(fleet.state_dir / "fleet.json")
    assert state is not None
    engines = [r.url for r in state.replicas if r.state is ReplicaState.READY]
    key = (fleet.state_dir / "engine_api_key").read_text().strip()
    port = int(fleet.url.rsplit(":", 1)[1])
    gateways = [f"http://127.0.0.1:{port + 1}", f"http://127.0.0.1:{port + 2}"]
    modes = args.modes.split(",")
    runs = []
    for repeat in range(args.repeats):
        order = modes if repeat % 2 == 0 else modes[::-1]
        for mode in order:
            seed = 1000 * (repeat + 1) + modes.index(mode)
            row = await run_mode(mode, fleet, gateways, engines, key, seed, args)
            runs.append(row)
            print(json.dumps(row), flush=True)
    return {"runs": runs, "summary": summary(runs), "catch_up": await catch_up(fleet, gateways)}


def machine() -> dict[str, Any]:
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    state_dir = Path(tempfile.mkdtemp(prefix="kv2gw-"))
    with running_fleet(state_dir, config(args)) as fleet:
        measured = asyncio.run(measure(fleet, args))
    out = {"config": {k: str(v) for k, v in vars(args).items()}, **measured}
    out["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({"summary": out["summary"], "catch_up": out["catch_up"]}, indent=1))


if __name__ == "__main__":
    main()
