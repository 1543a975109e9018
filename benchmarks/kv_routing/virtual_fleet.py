"""The KV routing sweep's fleet on virtual time, for per-request traces: the simulator's
scheduler, KV cache and step times (deepfleet.sim) for every engine, the gateway's KV index and
routing policies, and a model of sglang-router's cache_aware policy, without HTTP or processes.
A whole sweep takes seconds, so a policy change can be checked over many seeds before the real
(wall-clock, ~20 min) sweep in sim_sweep.py.

What it leaves out: HTTP and tokenization latency, and the event and scrape delays of the real
run (KV events apply at the end of the step that produced them; load is read every
`scrape_s`). Times are wall-clock seconds of sim_sweep.py's runs (simulated time / speed).
`--jitter F --event-lag S` add the real run's noise as a model: each step lasts up to F times
longer (a busy CPU) and each event batch reaches the router up to S seconds late, in order.

    .venv/bin/python benchmarks/kv_routing/virtual_fleet.py --rates 4,8,16 --seeds 5
    .venv/bin/python benchmarks/kv_routing/virtual_fleet.py --rates 8 --seeds 1 --trace 8
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from deepfleet.config.routing import DEFAULT_SCORERS
from deepfleet.kvcache.hashing import block_hashes
from deepfleet.kvcache.index import KvIndex
from deepfleet.routing.base import Endpoint, RouteRequest
from deepfleet.routing.registry import build_policy
from deepfleet.routing.scorers import known_scorers
from deepfleet.sim.build import SimSpec, build
from deepfleet.sim.kv_cache import Cleared, KvCache, Removed, Stored
from deepfleet.sim.scheduler import Batch, Scheduler
from deepfleet.sim.scheduler import Sequence as Seq

SIM_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
BLOCK = 16
TEMPLATE = 12  # chat template tokens around the system prompt and the question


@dataclass(frozen=True)
class Plan:
    length: int


@dataclass
class Request:
    index: int
    group: int
    tokens: list[int]
    hashes: tuple[int, ...]
    arrival: float
    output_len: int
    replica: int = -1
    reason: str = ""
    first_token: float | None = None
    done: float | None = None
    cached: int = 0
    queue_at_route: tuple[int, int, int] = (0, 0, 0)  # running, waiting, backlog blocks
    seq: Seq | None = None


@dataclass
class Engine:
    index: int
    scheduler: Scheduler
    cache: KvCache
    busy_until: float | None = None
    batch: Batch | None = None
    running: int = 0  # gauges as of the last schedule (vLLM refreshes them per step)
    waiting: int = 0
    kv_usage: float = 0.0
    engine_hash: dict[bytes, int] = field(default_factory=dict)


def workload(
    requests: int, groups: int, system_len: int, question_len: int, rng: random.Random
) -> list[tuple[int, list[int]]]:
    """sim_sweep.py's shape: groups x prompts sharing a system prompt, shuffled."""
    per_group = requests // groups + 1
    specs = []
    vocab = 100_000
    for group in range(groups):
        system = [rng.randrange(vocab) for _ in range(system_len + TEMPLATE)]
        for _ in range(per_group):
            question = [rng.randrange(vocab) for _ in range(question_len + TEMPLATE)]
            specs.append((group, system + question))
    rng.shuffle(specs)
    return specs[:requests]


class Sglang:
    """sglang-router 0.3.2's cache_aware, as documented and defaulted: the worker whose
    approximate tree (everything routed to it) matches most of the prompt if the match ratio
    exceeds `cache_threshold`, else the worker with the smallest tree; when the loads differ
    by more than `balance_abs` and `balance_rel` times, the least loaded."""

    def __init__(self, n: int, threshold: float = 0.3, abs_: int = 64, rel: float = 1.5) -> None:
        self.trees: list[set[int]] = [set() for _ in range(n)]
        self.sizes = [0] * n
        self.threshold, self.abs, self.rel = threshold, abs_, rel

    def route(self, hashes: Sequence[int], tokens: int, loads: Sequence[int]) -> tuple[int, str]:
        n = len(self.trees)
        if max(loads) - min(loads) > self.abs and max(loads) > self.rel * min(loads):
            pick, reason = min(range(n), key=lambda i: loads[i]), "balance"
        else:
            depth = []
            for tree in self.trees:
                d = 0
                for h in hashes:
                    if h not in tree:
                        break
                    d += 1
                depth.append(d)
            best = max(range(n), key=lambda i: depth[i])
            if depth[best] * BLOCK / max(tokens, 1) > self.threshold:
                pick, reason = best, "prefix"
            else:
                pick, reason = min(range(n), key=lambda i: self.sizes[i]), "smallest"
        new = [h for h in hashes if h not in self.trees[pick]]
        self.trees[pick].update(new)
        self.sizes[pick] += len(new) * BLOCK + tokens % BLOCK
        return pick, reason


class Fleet:
    def __init__(self, args: argparse.Namespace, policy: str, params: dict[str, Any]) -> None:
        config, profile, _ = build(
            SimSpec(model=SIM_MODEL, gpu=args.gpu, kv_tokens=args.kv_tokens, block_size=BLOCK)
        )
        self.step_s: Callable[[int, int, int], float] = profile.step_s
        self.speed = args.speed
        self.engines = []
        for i in range(args.engines):
            cache = KvCache(args.kv_tokens // BLOCK, BLOCK)
            sched = Scheduler(cache, config.max_num_seqs, config.max_num_batched_tokens)
            self.engines.append(Engine(i, sched, cache))
        self.policy_name = policy
        self.policy = None if policy == "sglang_cache_aware" else build_policy(policy, params)
        self.sglang = Sglang(args.engines) if policy == "sglang_cache_aware" else None
        self.index = KvIndex()
        self.ttl = args.pending_ttl
        self.scrape_s = args.scrape_s
        self.loads = [(0, 0, 0.0)] * args.engines  # running, waiting, kv usage as scraped
        self.routed = [0] * args.engines
        self.open = [0] * args.engines
        self.events: list[tuple[float, int, str, Any]] = []
        self.order = itertools.count()
        self.now = 0.0
        self.jitter, self.event_lag = args.jitter, args.event_lag
        self.noise = random.Random(args.noise_seed)
        self.delivered = [0.0] * args.engines  # when each engine's last event batch arrives

    def push(self, t: float, kind: str, item: Any) -> None:
        heapq.heappush(self.events, (t, next(self.order), kind, item))

    def run(self, requests: list[Request]) -> None:
        """Requests arriving at their `arrival` (seconds after now)."""
        start = self.now
        for r in requests:
            r.arrival += start
            self.push(r.arrival, "arrive", r)
        if not any(kind == "scrape" for _, _, kind, _ in self.events):
            self.push(start, "scrape", None)
        left = len(requests)
        while self.events and left:
            t, _, kind, item = heapq.heappop(self.events)
            self.now = max(self.now, t)  # a late event batch may predate a reset's gap
            if kind == "arrive":
                self.route(item)
            elif kind == "step":
                left -= self.finish_step(item)
            elif kind == "events":
                self.apply(*item)
            elif kind == "scrape":
                self.loads = [(e.running, e.waiting, e.kv_usage) for e in self.engines]
                self.routed = [0] * len(self.engines)
                self.push(self.now + self.scrape_s, "scrape", None)

    def reset_caches(self, gap_s: float = 3.0, flush: bool = False) -> None:
        """sim_sweep.py between steps: every engine empties its prefix cache. As the simulator
        does, the AllBlocksCleared event goes out with the engine's next step's events, so the
        router's index keeps the old blocks until then; `flush`: each engine runs a step (a
        one-token prompt) before the next step starts, which publishes it."""
        for e in self.engines:
            assert e.cache.reset()
            if flush:
                self.publish(e)
        self.now += gap_s

    def route(self, r: Request) -> None:
        n = len(self.engines)
        if self.sglang is not None:
            pick, r.reason = self.sglang.route(r.hashes, len(r.tokens), self.open)
        else:
            assert self.policy is not None
            matched = self.index.match(r.hashes, self.now)
            endpoints = [
                Endpoint(
                    str(i), "sim", "", in_flight=self.open[i], running=self.loads[i][0],
                    waiting=self.loads[i][1], kv_usage=self.loads[i][2], routed=self.routed[i],
                    matched_blocks=matched.get(str(i), 0),
                    prefill_blocks=self.index.backlog(str(i), self.now),
                    cached_blocks=self.index.blocks_of(str(i)),
                )
                for i in range(n)
            ]  # fmt: skip
            request = RouteRequest("sim", b"", r.hashes, len(r.tokens))
            decision = self.policy.decide(request, endpoints)
            first, r.reason = decision.order[0], decision.reason
            pick = int(first.replica_id)
            self.index.assume(first.replica_id, r.hashes, self.now + self.ttl, at=self.now)
        e = self.engines[pick]
        r.replica = pick
        r.queue_at_route = (
            len(e.scheduler.running),
            len(e.scheduler.waiting),
            self.index.backlog(str(pick), self.now),
        )
        self.routed[pick] += 1
        self.open[pick] += 1
        seq = Seq(f"r{r.index}", r.tokens, Plan(r.output_len), self.now)  # type: ignore[arg-type]
        r.seq = seq
        seq_owner[id(seq)] = r
        e.scheduler.add(seq)
        if e.busy_until is None:
            self.start_step(e)

    def start_step(self, e: Engine) -> None:
        if not e.scheduler.has_work:
            e.busy_until, e.batch = None, None
            e.running, e.waiting, e.kv_usage = 0, 0, e.cache.usage
            return
        batch = e.scheduler.schedule()
        e.running, e.waiting = len(e.scheduler.running), len(e.scheduler.waiting)
        e.kv_usage = e.cache.usage
        duration = self.step_s(batch.decode_seqs, batch.context_tokens, batch.prefill_tokens)
        duration *= 1.0 + self.noise.uniform(0.0, self.jitter)
        e.batch = batch
        e.busy_until = self.now + max(duration, 1e-4) / self.speed
        self.push(e.busy_until, "step", e)

    def finish_step(self, e: Engine) -> int:
        assert e.batch is not None
        finished = 0
        for seq in e.scheduler.complete(e.batch):
            r = seq_owner[id(seq)]
            seq.output_ids.append(1)
            if r.first_token is None:
                r.first_token = self.now
                r.cached = seq.cached_prompt
            if len(seq.output_ids) >= r.output_len:
                e.scheduler.finish(seq)
                r.done = self.now
                self.open[e.index] -= 1
                finished += 1
        self.publish(e)
        self.start_step(e)
        return finished

    def publish(self, e: Engine) -> None:
        """The engine's events of the step that ends now, as one batch stamped now."""
        events = e.cache.drain_events()
        if not self.event_lag:
            self.apply(e.index, self.now, events)
            return
        arrives = max(self.now + self.noise.uniform(0.0, self.event_lag), self.delivered[e.index])
        self.delivered[e.index] = arrives
        self.push(arrives, "events", (e.index, self.now, events))

    def apply(self, engine: int, ts: float, events: Sequence[Any]) -> None:
        name = str(engine)
        for ev in events:
            if isinstance(ev, Stored):
                self.index.stored(name, list(ev.hashes), ev.parent, ev.token_ids, BLOCK)
            elif isinstance(ev, Removed):
                self.index.removed(name, [ev.hash])
            elif isinstance(ev, Cleared):
                self.index.cleared(name, before=ts)


seq_owner: dict[int, Request] = {}


def sweep_workload(args: argparse.Namespace, step: int) -> list[tuple[int, list[int]]]:
    """sim_sweep.py's own prompts of sweep step `step` (SGLang's shared-prefix generator with
    its seed), through the bundled model's chat template and tokenizer as the gateway sees them."""
    import json
    from pathlib import Path

    from deepfleet.bench.workloads import shared_prefix
    from deepfleet.catalog import bundled
    from deepfleet.kvcache.tokenize import ModelTokenizer, decode_chat

    requests = args.requests
    params = {"groups": str(args.groups), "prompts_per_group": str(requests // args.groups + 1),
              "system_len": str(args.system_len), "question_len": str(args.question_len),
              "output_len": str(args.output_len)}  # fmt: skip
    built = shared_prefix.build(requests, params, random.Random(1000 + step))
    tokenizer = ModelTokenizer(Path(str(bundled.default_target())))
    systems: dict[str, int] = {}
    out = []
    for chain in built.chains:
        spec = chain[0]
        body = json.dumps({"model": "sim", "messages": list(spec.messages)}).encode()
        group = systems.setdefault(str(spec.messages[0]["content"]), len(systems))
        out.append((group, list(tokenizer.chat(decode_chat(body)).tokens)))
    return out


def one_run(
    args: argparse.Namespace,
    policy: str,
    params: dict[str, Any],
    rate: float,
    seed: int,
    fleet: Fleet | None = None,
) -> list[Request]:
    if args.sweep_step is not None:
        specs = sweep_workload(args, args.sweep_step)
    else:
        specs = workload(
            args.requests,
            args.groups,
            args.system_len,
            args.question_len,
            random.Random(1000 + seed),
        )
    arrivals = random.Random(seed if args.sweep_step is None else args.sweep_step)
    t = 0.0
    requests = []
    for i, (group, tokens) in enumerate(specs):
        t += arrivals.expovariate(rate)
        requests.append(
            Request(i, group, tokens, tuple(block_hashes(tokens, BLOCK)), t, args.output_len)
        )
    (fleet or Fleet(args, policy, params)).run(requests)
    return requests


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(requests: Sequence[Request]) -> dict[str, float]:
    ttft = [r.first_token - r.arrival for r in requests if r.first_token is not None]
    done = sorted(r.done for r in requests if r.done is not None)
    span = done[-1] - min(r.arrival for r in requests) if done else 1.0
    prompt = sum(len(r.tokens) for r in requests)
    cold = [r for r in requests if 2 * r.cached < len(r.tokens)]
    return {
        "p50": pct(ttft, 0.5),
        "p90": pct(ttft, 0.9),
        "p99": pct(ttft, 0.99),
        "max": max(ttft),
        "req_s": len(done) / span,
        "hit": sum(r.cached for r in requests) / prompt,
        # a group's prefix computed again: by two requests admitted in one step, or evicted
        "recomputed": len(cold) - len({r.group for r in cold}),
    }


def trace(requests: Sequence[Request], worst: int) -> None:
    slow = sorted(requests, key=lambda r: -(r.first_token or 0) + r.arrival)[:worst]
    for r in sorted(slow, key=lambda r: r.arrival):
        assert r.first_token is not None
        print(
            f"  t={r.arrival:6.2f} ttft={r.first_token - r.arrival:5.2f} group={r.group:2d} "
            f"replica={r.replica:2d} {r.reason:8s} cached={r.cached:5d} "
            f"run/wait/backlog at route={r.queue_at_route}"
        )
        same = [
            q
            for q in requests
            if q.replica == r.replica and abs(q.arrival - r.arrival) < 8 and q is not r
        ]
        for q in sorted(same, key=lambda q: q.arrival):
            assert q.first_token is not None
            print(
                f"      peer t={q.arrival:6.2f} ttft={q.first_token - q.arrival:5.2f} "
                f"group={q.group:2d} cached={q.cached:5d} {q.reason}"
            )


def kv_aware_params(text: str) -> dict[str, Any]:
    """`prefix=2,spill_abs=8`: scorer weights change the default profile, the rest as given."""
    given = dict(kv.split("=", 1) for kv in text.split(",") if kv)
    scorers = {k: float(given.pop(k)) for k in list(given) if k in known_scorers()}
    return {"scorers": {**DEFAULT_SCORERS, **scorers}, **given} if scorers else dict(given)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", type=int, default=16)
    p.add_argument("--gpu", default="H200")
    p.add_argument("--speed", type=float, default=0.1)
    p.add_argument("--kv-tokens", type=int, default=16384)
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--system-len", type=int, default=2048)
    p.add_argument("--question-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--requests", type=int, default=320)
    p.add_argument("--rates", default="4,8,16")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--policies", default="kv_aware,sglang_cache_aware,round_robin")
    p.add_argument(
        "--params", default="",
        help="kv_aware parameters k=v,k=v: a scorer's weight (prefix=2) or spill_abs=8 ...",
    )  # fmt: skip
    p.add_argument("--pending-ttl", type=float, default=30.0)
    p.add_argument("--scrape-s", type=float, default=0.5)
    p.add_argument(
        "--sweep-step", type=int, default=None,
        help="sim_sweep.py's prompts and arrivals of this step (0: the first rate); seed = step",
    )  # fmt: skip
    p.add_argument("--trace", type=int, default=0, help="print the N slowest requests")
    p.add_argument("--jitter", type=float, default=0.0, help="steps last up to 1+F times longer")
    p.add_argument("--event-lag", type=float, default=0.0, help="event batches up to S s late")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of --jitter and --event-lag")
    p.add_argument(
        "--chained", action="store_true",
        help="as sim_sweep.py: the rates in order over one fleet and router per policy, "
        "caches reset between steps; step i uses sim_sweep.py's prompts and arrivals of step i",
    )  # fmt: skip
    p.add_argument("--flush-reset", action="store_true", help="with --chained: see reset_caches")
    args = p.parse_args()
    params = kv_aware_params(args.params)
    if args.chained:
        rates = [float(r) for r in args.rates.split(",")]
        for policy in args.policies.split(","):
            fleet = Fleet(args, policy, params if policy == "kv_aware" else {})
            for step, rate in enumerate(rates):
                if step:
                    fleet.reset_caches(flush=args.flush_reset)
                args.sweep_step = step
                requests = one_run(args, policy, {}, rate, step, fleet)
                m = summarize(requests)
                print(
                    f"rate {rate:4.0f} {policy:20s} p50 {m['p50']:5.2f} p90 {m['p90']:5.2f} "
                    f"p99 {m['p99']:5.2f} max {m['max']:5.1f} req/s {m['req_s']:5.2f} "
                    f"hit {m['hit']:.3f} recomputed {m['recomputed']}",
                    flush=True,
                )
                if args.trace:
                    trace(requests, args.trace)
        return
    for rate in (float(r) for r in args.rates.split(",")):
        for policy in args.policies.split(","):
            rows = []
            for seed in range(args.seeds):
                requests = one_run(args, policy, params if policy == "kv_aware" else {}, rate, seed)
                rows.append(summarize(requests))
                if args.trace:
                    print(f"rate {rate} {policy} seed {seed}")
                    trace(requests, args.trace)
            mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
            p99s = " ".join(f"{r['p99']:.1f}" for r in rows)
            print(
                f"rate {rate:4.0f} {policy:20s} p50 {mean['p50']:5.2f} p90 {mean['p90']:5.2f} "
                f"p99 {mean['p99']:5.2f} [{p99s}] max {mean['max']:5.1f} "
                f"req/s {mean['req_s']:5.2f} hit {mean['hit']:.3f} "
                f"recomputed {mean['recomputed']:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
