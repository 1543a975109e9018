"""Shared pieces of the KV routing benchmarks: processes we start (and always stop), gateway
state files, engine counters and cache resets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from deepfleet.bench.metrics import PrefixCounters, read_counters
from deepfleet.config.kvcache import KV_ROUTING_FILE, KvRoutingSpec
from deepfleet.config.schema import GatewaySpec
from deepfleet.fleet.ports import free_port, port_in_use
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """Where a result was measured."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": None,
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


class Processes:
    """Processes started in their own session; `stop_all` ends each group we started."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs.append(
            subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True, env={**os.environ, **(env or {})},
            )
        )  # fmt: skip

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@contextlib.contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    group = Processes(logs)
    try:
        yield group
    finally:
        group.stop_all()


def free_run(count: int, start: int = 41000) -> int:
    """The first port of `count` consecutive free ports (the simulator offsets engine i by i)."""
    port = start
    while port < 60000:
        if not any(port_in_use("127.0.0.1", port + i) for i in range(count)):
            return port
        port += count
    raise RuntimeError("no run of free ports")


@dataclass(frozen=True)
class Replica:
    replica_id: str
    url: str
    kv_events_port: int | None = None
    restarts: int = 0


def write_gateway_state(
    state_dir: Path,
    model: str,
    routing: str,
    replicas: Sequence[Replica],
    *,
    tokenizer: str | None,
    block_size: int,
    max_model_len: int | None = None,
    spec: KvRoutingSpec | None = None,
) -> Path:
    """A fleet state for a gateway of our own over engines we started (no controller)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state = FleetState(
        controller_pid=os.getpid(),
        gateway_url="",
        models=[ModelRoute(model, routing, max_model_len, tokenizer, block_size)],
        replicas=[
            ReplicaStatus(
                r.replica_id, model, "vllm", r.url, ReplicaState.READY, restarts=r.restarts,
                kv_events_port=r.kv_events_port,
            )
            for r in replicas
        ],
    )  # fmt: skip
    path = state_dir / "fleet.json"
    write_state(path, state)
    (state_dir / KV_ROUTING_FILE).write_text((spec or KvRoutingSpec()).model_dump_json())
    gateway = GatewaySpec(keys_db=state_dir / "keys.db")
    (state_dir / "gateway.json").write_text(gateway.model_dump_json())
    return path


def start_gateway(group: Processes, name: str, state_file: Path, port: int | None = None) -> str:
    port = port or free_port()
    group.start(
        name,
        [sys.executable, "-m", "deepfleet.gateway", "--state-file", str(state_file),
         "--settings", str(state_file.parent / "gateway.json"), "--port", str(port)],
    )  # fmt: skip
    return f"http://127.0.0.1:{port}"


async def wait_ready(urls: Sequence[str], path: str = "/health", within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        for url in urls:
            while True:
                try:
                    async with session.get(url + path, timeout=aiohttp.ClientTimeout(2)) as r:
                        if r.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url}{path} not ready in {within_s:.0f} s")
                await asyncio.sleep(0.25)


async def counters(engine_urls: Sequence[str]) -> PrefixCounters | None:
    async with aiohttp.ClientSession() as session:
        return await read_counters(session, [u + "/metrics" for u in engine_urls])


async def reset_caches(engine_urls: Sequence[str]) -> bool:
    """Empty every engine's prefix cache (vLLM dev-mode route; the simulator has it)."""
    async with aiohttp.ClientSession() as session:

        async def one(url: str) -> bool:
            try:
                async with session.post(url + "/reset_prefix_cache") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        return all(await asyncio.gather(*(one(u) for u in engine_urls)))


async def publish_resets(engine_urls: Sequence[str], model: str) -> bool:
    """After reset_caches: one prompt shorter than a KV block (stores nothing) to each engine,
    so that its AllBlocksCleared event goes out now. An engine publishes KV events with a
    step's results (the simulator; vLLM takes them from its scheduler), so an idle engine's
    reset would otherwise reach event-driven routers only with its next request's blocks,
    and they would start a step believing every replica still holds the previous step's
    prefixes. Routers that do not read events are not affected."""
    body = {"model": model, "prompt": "hi", "max_tokens": 1}
    async with aiohttp.ClientSession() as session:

        async def one(url: str) -> bool:
            try:
                async with session.post(url + "/v1/completions", json=body) as r:
                    await r.read()
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        return all(await asyncio.gather(*(one(u) for u in engine_urls)))


async def scrape(url: str, prefix: str, suffix: str = "") -> dict[str, float]:
    """Samples of a gateway's /metrics whose names start with `prefix` and end with `suffix`
    (labels in the key)."""
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(prefix):
                key, _, value = line.rpartition(" ")
                if key.split("{", 1)[0].endswith(suffix):
                    out[key] = float(value)
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Counter increases between two scrapes (labels shortened to their values)."""
    out = {}
    for key, value in after.items():
        change = value - before.get(key, 0.0)
        if change:
            name, _, labels = key.partition("{")
            values = [part.split("=", 1)[1].strip('"') for part in labels.rstrip("}").split(",")
                      if "=" in part]  # fmt: skip
            short = name.removeprefix("deepfleet_routing_").removesuffix("_total")
            out[":".join([short, *values[1:]])] = change
    return out


def completion_rate(report: Any) -> tuple[float, float]:
    """(requests/s, output tokens/s) over the span of completions: with Poisson arrivals at
    rate r an unsaturated target completes at r, and the first and last requests' latency
    stays out of the figure (a run's whole duration would count it)."""
    done = sorted((r.started_at + r.e2e_s, r.output_tokens) for r in report.results if r.ok)
    if len(done) < 2:
        return 0.0, 0.0
    span = done[-1][0] - done[0][0]
    tokens = sum(t for _, t in done[1:])
    return (len(done) - 1) / span, tokens / span


def summary_row(report: Any) -> dict[str, Any]:
    s = report.summary
    req_s, tok_s = completion_rate(report)
    return {
        "completion_req_s": round(req_s, 3),
        "completion_output_tok_s": round(tok_s, 1),
        "requests": s.requests,
        "completed": s.completed,
        "failed": s.failed,
        "duration_s": round(s.duration_s, 2),
        "request_throughput": round(s.request_throughput, 3),
        "output_throughput": round(s.output_throughput, 1),
        "ttft_p50_s": round(s.ttft.p50, 4),
        "ttft_p90_s": round(s.ttft.p90, 4),
        "ttft_p99_s": round(s.ttft.p99, 4),
        "e2e_p50_s": round(s.e2e.p50, 4),
        "prefix_cache_hit_rate": (
            None if report.prefix_cache_hit_rate is None else round(report.prefix_cache_hit_rate, 4)
        ),
        "errors": list(s.errors),
    }
