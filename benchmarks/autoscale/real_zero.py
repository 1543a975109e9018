"""Scale to zero and back on real engines (issue 24's acceptance): vLLM's CPU build, the bundled
model, `replicas: {min: 0, max: 2}` with short cool-downs, driven by `deepfleet up`.

    PYTHONPATH=src .venv/bin/python benchmarks/autoscale/real_zero.py \
        --json benchmarks/results/autoscale/real-zero.json

Phases, each bounded by a timeout:

1. idle: the fleet starts with one replica; with no traffic it drains to zero (idle timeout).
   The model must stay in /v1/models, marked cold.
2. cold: one streamed request. The gateway holds it, the controller sees it waiting and
   starts a replica; it is served. Its TTFT is about one engine start (compared with the
   replica's measured start, `ready_at - started_at`).
3. load: `--streams` concurrent streams (more than one replica's `max_num_seqs`, so requests
   queue in the engine) until a second replica is ready, then `--hold` seconds more.
4. scale-down under 16 streams: with `--down-streams` streams running on the two replicas,
   `deepfleet apply` of the same config with `max: 1` (a `retarget`: nothing restarts) makes
   the autoscaler drain one replica mid-stream; the streams go on until it has stopped.
5. idle again: back to zero replicas, each removed replica drained first.

Every request is counted (completed with [DONE] and no error event, or why not); the
controller's decisions are read from its log (logs/autoscaler.log) and the replica counts
are sampled from the state file (what `deepfleet status` reads) every half second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import MODEL, Fleet, cli, running_fleet  # noqa: E402

from deepfleet.fleet.state import FleetState, ReplicaState, read_state  # noqa: E402

DECISION = re.compile(r"autoscale \S+: (\d+) -> (\d+): (.*?)(?:; inputs (.*))?$")


@dataclass
class Report:
    requests: int = 0
    completed: int = 0
    failures: list[str] = field(default_factory=list)
    to_zero_s: float | None = None
    """From the fleet serving to zero replicas (idle timeout + the window of traffic)."""
    listed_cold: list[str] = field(default_factory=list)
    """/v1/models at zero replicas: `id status` per model."""
    cold_ttft_s: float | None = None
    cold_total_s: float | None = None
    engine_start_s: float | None = None
    """The replica the cold request started: ready_at - started_at from the state."""
    second_replica_s: float | None = None
    """From the first of the load's streams to two ready replicas."""
    stalled: dict[str, object] = field(default_factory=dict)
    """The host and engine logs when the second replica did not come (see `stalled`)."""
    down_requests: int = 0
    """Streams that ran while the scale-down under load drained a replica."""
    down_failures: list[str] = field(default_factory=list)
    drained_under_load_s: float | None = None
    """From `apply` (max 1) to one live replica: the drain with its streams running."""
    apply: dict[str, object] = field(default_factory=dict)
    """`deepfleet apply --json` of max 1: the plan's action per model, its phase and steps."""
    back_to_zero_s: float | None = None
    most_ready: int = 0
    decisions: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    """Each decision's inputs as the controller logged them (one per decision)."""
    drains: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    """`t ready/starting/draining desired` at every change of the sampled counts."""


def _bind(value: str) -> str:
    """The engines' engine_env lines for --cpu-bind (`split`: none, deepfleet binds)."""
    if value == "split":
        return ""
    return f"    engine_env:\n      VLLM_CPU_OMP_THREADS_BIND: '{value}'\n"


def config(args: argparse.Namespace, most: int = 2) -> str:
    return f"""
models:
  - name: {MODEL}
    source: bundled
    engine: vllm-cpu
    replicas: {{min: 0, max: {most}}}
    max_model_len: 2048
    engine_args:
      max_num_seqs: {args.max_num_seqs}
{_bind(args.cpu_bind)}    autoscale:
      ttft_p90_ms: 20000
      itl_p90_ms: 2000
      queue_per_replica: 2
      up_cooldown_s: 10
      down_cooldown_s: {args.down_cooldown}
      idle_timeout_s: {args.idle_timeout}
"""


def body(tokens: int) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell a short story about a lighthouse."}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }


async def stream(
    session: aiohttp.ClientSession, url: str, tokens: int, report: Report
) -> float | None:
    """One streamed request, counted in `report`; its TTFT when it completed."""
    started = time.monotonic()
    ttft, last, why = None, "", ""
    try:
        async with session.post(url + "/v1/chat/completions", json=body(tokens)) as resp:
            if resp.status != 200:
                why = f"HTTP {resp.status} {(await resp.text())[:200]}"
            else:
                async for raw in resp.content:
                    data = raw.decode().strip().removeprefix("data: ")
                    if not data:
                        continue
                    ttft = ttft if ttft is not None else time.monotonic() - started
                    last = data
                    if data != "[DONE]" and "error" in json.loads(data):
                        why = f"error event {data[:200]}"
                        break
                if not why and last != "[DONE]":
                    why = "no [DONE]"
    except (aiohttp.ClientError, TimeoutError) as exc:
        why = f"{type(exc).__name__} {exc}"
    report.requests += 1
    if why:
        report.failures.append(f"{time.strftime('%H:%M:%S')} {why}")
        return None
    report.completed += 1
    return ttft


class Watch:
    """The state file every half second: replica counts, and the timeline's changes."""

    def __init__(self, fleet: Fleet, report: Report) -> None:
        self.fleet, self.report = fleet, report
        self.t0 = time.monotonic()
        self.ready = self.live = self.draining = 0
        self.state: FleetState | None = None

    async def run(self) -> None:
        last = None
        while True:
            self.state = read_state(self.fleet.state_dir / "fleet.json") or self.state
            if self.state is not None:
                reps = [r for r in self.state.replicas if r.model == MODEL]
                ready = sum(r.state is ReplicaState.READY and not r.draining for r in reps)
                draining = sum(r.draining for r in reps)
                self.ready, self.live, self.draining = ready, len(reps) - draining, draining
                route = next(m for m in self.state.models if m.name == MODEL)
                now = (ready, self.live - ready, draining, route.desired)
                if now != last:
                    t = time.monotonic() - self.t0
                    self.report.timeline.append(
                        f"{t:.0f}s ready {now[0]} starting {now[1]} draining {now[2]} "
                        f"desired {now[3]} ({route.reason})"
                    )
                    last = now
                self.report.most_ready = max(self.report.most_ready, ready)
            await asyncio.sleep(0.5)

    async def until(self, check: Callable[[], bool], limit_s: float) -> float | None:
        """Seconds until `check()` holds, or None after `limit_s`."""
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            if check():
                return time.monotonic() - started
            await asyncio.sleep(0.5)
        return None


async def drive(fleet: Fleet, args: argparse.Namespace, report: Report) -> None:
    watch = Watch(fleet, report)
    watcher = asyncio.create_task(watch.run())
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    try:
        await asyncio.sleep(1.5)
        report.to_zero_s = await watch.until(lambda: watch.live == 0, args.phase_timeout)
        if report.to_zero_s is None:
            return
        await asyncio.sleep(0.5)  # the gateway re-reads the state file every 0.2 s
        async with session.get(fleet.url + "/v1/models") as resp:
            report.listed_cold = [
                f"{m['id']} {m.get('status')}" for m in (await resp.json())["data"]
            ]
        cold_start = time.monotonic()
        report.cold_ttft_s = await stream(session, fleet.url, args.tokens, report)
        report.cold_total_s = time.monotonic() - cold_start
        state = read_state(fleet.state_dir / "fleet.json")
        started = [r for r in (state.replicas if state else []) if r.model == MODEL]
        if started and started[0].ready_at and started[0].started_at:
            report.engine_start_s = round(started[0].ready_at - started[0].started_at, 1)

        stop = asyncio.Event()

        async def worker(into: Report, until: asyncio.Event) -> None:
            while not until.is_set():
                await stream(session, fleet.url, args.tokens, into)

        workers = [asyncio.create_task(worker(report, stop)) for _ in range(args.streams)]
        report.second_replica_s = await watch.until(lambda: watch.ready >= 2, args.phase_timeout)
        if report.second_replica_s is None:
            report.stalled = stalled(fleet.state_dir)
        else:
            await asyncio.sleep(args.hold)
            await scale_down_under_load(fleet, args, report, watch, worker)
        stop.set()
        await asyncio.gather(*workers)
        report.back_to_zero_s = await watch.until(lambda: watch.live == 0, args.phase_timeout)
    finally:
        await session.close()
        watcher.cancel()


async def scale_down_under_load(
    fleet: Fleet,
    args: argparse.Namespace,
    report: Report,
    watch: Watch,
    worker: Callable[[Report, asyncio.Event], Coroutine[Any, Any, None]],
) -> None:
    """More streams (to `--down-streams`), then `apply` max 1: one replica drains under them."""
    down, stop = Report(), asyncio.Event()
    extra = args.down_streams - args.streams
    more = [asyncio.create_task(worker(down, stop)) for _ in range(extra)]
    await asyncio.sleep(args.hold / 2)
    path = fleet.state_dir / "max1.yaml"
    path.write_text(config(args, most=1))
    started = time.monotonic()
    applied = await asyncio.to_thread(
        cli, "apply", "-f", str(path), "--state-dir", str(fleet.state_dir), "--json", timeout=300
    )
    try:
        out = json.loads(applied.stdout)
        actions = [f"{m['model']}: {m['action']}" for m in out["plan"]["models"]]
        report.apply = {"actions": actions, "phase": out["apply"]["phase"],
                        "steps": out["apply"]["steps"]}  # fmt: skip
    except (ValueError, KeyError, TypeError):
        report.apply = {"error": (applied.stdout + applied.stderr)[-600:]}
    left = await watch.until(lambda: watch.live == 1 and watch.draining == 0, args.phase_timeout)
    report.drained_under_load_s = None if left is None else round(time.monotonic() - started, 1)
    await asyncio.sleep(3)  # the streams go on, on one replica
    stop.set()
    await asyncio.gather(*more)
    report.down_requests, report.down_failures = down.requests, down.failures
    report.requests += down.requests
    report.completed += down.completed
    report.failures += down.failures


def stalled(state_dir: Path) -> dict[str, object]:
    """What the host and each replica's engine log showed when a phase timed out (CI of
    stop 27: a second replica took 445 s to start, 2.5x-6x what it takes here)."""
    mem = psutil.virtual_memory()
    logs = {
        p.name: p.read_text(errors="replace").splitlines()[-15:]
        for p in sorted((state_dir / "logs").glob(f"{MODEL}-*.log"))
    }
    return {"cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
            "load": os.getloadavg(), "mem_available_gib": round(mem.available / 2**30, 2),
            "swap_used_gib": round(psutil.swap_memory().used / 2**30, 2),
            "logs": logs}  # fmt: skip


def read_log(state_dir: Path, report: Report) -> None:
    path = state_dir / "logs" / "autoscaler.log"
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        m = DECISION.search(line)
        if m:
            report.decisions.append(f"{m.group(1)} -> {m.group(2)}: {m.group(3)}")
            report.inputs.append(m.group(4) or "")
        elif "draining" in line or "stopped" in line:
            report.drains.append(line.split(" autoscale ", 1)[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--down-streams", type=int, default=16, help="streams during the drain")
    ap.add_argument("--max-num-seqs", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--hold", type=float, default=20, help="load seconds with 2 replicas")
    ap.add_argument("--idle-timeout", type=float, default=20)
    ap.add_argument("--down-cooldown", type=float, default=40)
    ap.add_argument("--phase-timeout", type=float, default=420)
    ap.add_argument(
        "--cpu-bind",
        default="split",
        help="VLLM_CPU_OMP_THREADS_BIND for the engines; `split` (default): deepfleet's own "
        "split of the cores, each engine's processes kept off the other's bound core (until "
        "stop 28 a second engine starting there stalled behind the first one's busy worker: "
        "445 s in CI of stop 27); `nobind` or a core list: that value for every engine",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="state folder to use and keep (logs and all)")
    args = ap.parse_args()
    report = Report()
    with contextlib.ExitStack() as stack:
        d = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        d.mkdir(parents=True, exist_ok=True)
        with running_fleet(d, config(args)) as fleet:
            asyncio.run(drive(fleet, args, report))
        read_log(d, report)
    settings = vars(args) | {"json": str(args.json), "keep": str(args.keep)}
    out = json.dumps({"config": settings, **asdict(report)}, indent=2)
    print(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(out + "\n")


if __name__ == "__main__":
    main()
