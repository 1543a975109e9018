"""Limits across gateways: one key's RPM and another's TPM hammered through several real
gateway processes sharing one PostgreSQL, one gateway SIGKILLed mid-run; then the usage
ledger is compared with the engines' own books.

Setup: a throwaway PostgreSQL (tests/helpers/postgres.py), 2 zero-model engines that keep
their books (engine.py), N `python -m deepfleet.gateway` processes (gateway.state: postgres),
clients spread round-robin over the live gateways. Each key is first drained (hammered until
its first 429) so the window measures the enforced rate, not the bucket's initial burst of a
full minute; the window opens `--settle-s` later (the requests in flight then have settled
their token reservations) and lasts `--duration` seconds:

- RPM: requests admitted (a 200 head) in the window; expected rpm/60 x duration (+-2).
- TPM: tokens of the requests admitted in the window, as the engine reported them; expected
  tpm/60 x duration (within 2%).
- Meanwhile `--background` clients stream on a key without limits, so the SIGKILLed gateway
  has streams in flight: cut streams are in neither the ledger nor the engines' books.
- Ledger: after the run (survivors stopped with SIGTERM), the PostgreSQL usage ledger against
  the sum of the engines' books (requests, prompt and completion tokens) and against the
  answers the clients got whole. What a gateway promises (`ledger_check`): every answer a
  client got whole is in the ledger (its end leaves only once its line is committed), and
  nothing the engines did not finish is. Equal to the engines' books exactly (`ledger_exact`)
  unless an engine finished a request in the instant its gateway died: its last bytes were
  written to the dead gateway's socket, no client got them, and nobody bills them
  (`finished_not_delivered` counts those; they are always among `cut_at_clients`).

    .venv/bin/python benchmarks/ha/limits.py --duration 180     # the acceptance run
    .venv/bin/python benchmarks/ha/limits.py --duration 20 --json /tmp/x.json   # short
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.postgres import postgres_server  # noqa: E402

from deepfleet.config.schema import GatewaySpec  # noqa: E402
from deepfleet.config.state import StateSpec  # noqa: E402
from deepfleet.fleet.ports import free_port  # noqa: E402
from deepfleet.fleet.state import (  # noqa: E402
    FleetState,
    ModelRoute,
    ReplicaState,
    ReplicaStatus,
    write_state,
)
from deepfleet.gateway.store.postgres_keys import PostgresKeys  # noqa: E402

MODEL = "bench"
DSN_ENV = "DEEPFLEET_STATE_DSN"
MAX_TOKENS = 20
DEFAULT_JSON = ROOT / "benchmarks/results/ha-limits.json"


@dataclass
class KeyLoad:
    name: str
    secret: str
    t0: float | None = None  # the first 429: the window starts
    admitted: list[tuple[float, int]] = field(default_factory=list)  # (head at, tokens or -1)
    refused: int = 0
    cut: int = 0  # admitted, then the stream broke (its gateway died)
    errors: dict[str, int] = field(default_factory=dict)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


async def wait_up(url: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} not up in {within_s}s")


async def one(s: aiohttp.ClientSession, url: str, load: KeyLoad, pause_s: float) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {load.secret}"}
    try:
        async with s.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
            at = time.monotonic()
            if r.status == 429:
                load.refused += 1
                if load.t0 is None:
                    load.t0 = at
                await r.read()
                await asyncio.sleep(pause_s)
                return
            if r.status != 200:
                kind = f"http {r.status}"
                load.errors[kind] = load.errors.get(kind, 0) + 1
                await r.read()
                await asyncio.sleep(pause_s)
                return
            tokens = -1
            try:
                async for line in r.content:
                    if line.startswith(b"data: {") and b'"usage"' in line:
                        u = json.loads(line[6:])["usage"]
                        tokens = int(u["prompt_tokens"]) + int(u["completion_tokens"])
            except (TimeoutError, aiohttp.ClientError):
                tokens = -1
            load.admitted.append((at, tokens))
            if tokens < 0:
                load.cut += 1
    except (TimeoutError, aiohttp.ClientError) as exc:
        kind = type(exc).__name__
        load.errors[kind] = load.errors.get(kind, 0) + 1
        await asyncio.sleep(0.05)


async def hammer(
    urls: list[str],
    alive: list[bool],
    load: KeyLoad,
    clients: int,
    pause_s: float,
    stop: asyncio.Event,
) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def client(i: int) -> None:
            n = i
            while not stop.is_set():
                live = [u for u, ok in zip(urls, alive, strict=True) if ok]
                n += 1
                await one(s, live[n % len(live)], load, pause_s)

        await asyncio.gather(*(client(i) for i in range(clients)))


def window(load: KeyLoad, duration: float) -> list[tuple[float, int]]:
    assert load.t0 is not None, f"{load.name}: never refused: the load is under the limit"
    return [(t, tok) for t, tok in load.admitted if load.t0 <= t < load.t0 + duration]


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    with postgres_server() as pg:
        env = {DSN_ENV: pg.dsn}
        keys = PostgresKeys(pg.dsn)  # also creates the schema
        _, rpm_secret = keys.create("rpm-key", rpm=args.rpm)
        _, tpm_secret = keys.create("tpm-key", tpm=args.tpm)
        _, free_secret = keys.create("unlimited")  # streams in flight when the SIGKILL lands
        keys.close()
        try:
            engines = []
            for i in range(2):
                port = free_port()
                argv = [sys.executable, str(HERE / "engine.py"), "--port", str(port)]
                argv += ["--tokens", str(MAX_TOKENS), "--itl-ms", str(args.itl_ms)]
                procs.append(spawn(argv, tmp / f"engine{i}.log"))
                engines.append(f"http://127.0.0.1:{port}")
            state = FleetState(
                controller_pid=os.getpid(),
                gateway_url="",
                models=[ModelRoute(MODEL, "round_robin", 4096)],
            )
            for i, url in enumerate(engines):
                state.replicas.append(
                    ReplicaStatus(f"{MODEL}-{i}", MODEL, "fake", url, ReplicaState.READY)
                )
            write_state(tmp / "fleet.json", state)
            spec = GatewaySpec(state=StateSpec(backend="postgres", dsn_env=DSN_ENV))
            (tmp / "gateway.json").write_text(spec.model_dump_json())
            urls, gateways = [], []
            for i in range(args.gateways):
                port = free_port()
                argv = [
                    sys.executable,
                    "-m",
                    "deepfleet.gateway",
                    "--state-file",
                    str(tmp / "fleet.json"),
                ]
                argv += ["--settings", str(tmp / "gateway.json"), "--port", str(port)]
                gateways.append(spawn(argv, tmp / f"gateway{i}.log", env))
                urls.append(f"http://127.0.0.1:{port}")
            procs += gateways
            for url in engines + urls:
                await wait_up(url + "/health")
            alive = [True] * len(urls)
            stop = asyncio.Event()
            loads = [KeyLoad("rpm", rpm_secret), KeyLoad("tpm", tpm_secret)]
            background = KeyLoad("unlimited", free_secret)
            tasks = [
                asyncio.create_task(
                    hammer(urls, alive, ld, args.clients, args.pause_ms / 1000, stop)
                )
                for ld in loads
            ]
            if args.background:
                tasks.append(
                    asyncio.create_task(hammer(urls, alive, background, args.background, 0, stop))
                )
            started = time.monotonic()
            while any(ld.t0 is None for ld in loads):
                if time.monotonic() - started > 120:
                    raise SystemExit("the keys were never refused: no limit is enforced")
                await asyncio.sleep(0.05)
            # The window opens once both buckets are in their steady state: the requests in
            # flight at the first 429 have ended and settled their reservations.
            await asyncio.sleep(args.settle_s)
            t0 = time.monotonic()
            for ld in loads:
                ld.t0 = t0
            print(f"drained in {t0 - started:.1f}s; measuring {args.duration:g}s", file=sys.stderr)
            killed_at = None
            while (now := time.monotonic()) < t0 + args.duration + 1:
                if args.kill and killed_at is None and now >= t0 + args.duration / 2:
                    victim = gateways[1]
                    alive[1] = False
                    os.killpg(victim.pid, signal.SIGKILL)
                    killed_at = now - t0
                    print(
                        f"SIGKILLed gateway 1 (pid {victim.pid}) at {killed_at:.1f}s",
                        file=sys.stderr,
                    )
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*tasks)
            for g, ok in zip(gateways, alive, strict=True):  # survivors: a graceful stop
                if ok:
                    os.killpg(g.pid, signal.SIGTERM)
            for g in gateways:
                g.wait(30)
            books = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cut": 0}
            async with aiohttp.ClientSession() as s:
                for url in engines:
                    async with s.get(url + "/usage") as r:
                        for k, v in (await r.json()).items():
                            books[k] += int(v)
            with psycopg.connect(pg.dsn) as conn:
                row = conn.execute(
                    "SELECT coalesce(sum(requests),0), coalesce(sum(prompt_tokens),0), "
                    "coalesce(sum(completion_tokens),0) FROM usage"
                ).fetchone()
            assert row is not None
            ledger = {
                "requests": int(row[0]),
                "prompt_tokens": int(row[1]),
                "completion_tokens": int(row[2]),
            }
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
    rpm_window = window(loads[0], args.duration)
    tpm_window = window(loads[1], args.duration)
    rpm_expected = args.rpm / 60 * args.duration
    tpm_tokens = sum(t for _, t in tpm_window if t >= 0)
    tpm_expected = args.tpm / 60 * args.duration
    result = {
        "benchmark": "ha-limits",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_after": os.getloadavg(),
        },
        "gateways": args.gateways,
        "duration_s": args.duration,
        "killed_gateway_at_s": killed_at,
        "rpm": {
            "limit": args.rpm,
            "admitted": len(rpm_window),
            "expected": rpm_expected,
            "refused": loads[0].refused,
            "cut_by_kill": loads[0].cut,
            "errors": loads[0].errors,
            "ok": abs(len(rpm_window) - rpm_expected) <= 2,
        },
        "tpm": {
            "limit": args.tpm,
            "tokens": tpm_tokens,
            "expected": tpm_expected,
            "error_pct": round(100 * (tpm_tokens - tpm_expected) / tpm_expected, 3),
            "requests": len(tpm_window),
            "cut_by_kill": sum(1 for _, t in tpm_window if t < 0),
            "refused": loads[1].refused,
            "errors": loads[1].errors,
            "ok": abs(tpm_tokens - tpm_expected) <= 0.02 * tpm_expected,
        },
        "background": {
            "clients": args.background,
            "completed": sum(1 for _, t in background.admitted if t >= 0),
            "cut_by_kill": background.cut,
            "errors": background.errors,
        },
        "ledger": ledger,
        "engine_books": books,
        "ledger_exact": all(ledger[k] == books[k] for k in ledger),
        "ledger_check": ledger_check(ledger, books, (*loads, background)),
    }
    return result


def ledger_check(
    ledger: dict[str, int], books: dict[str, int], loads: tuple[KeyLoad, ...]
) -> dict[str, Any]:
    """The ledger against what the clients got and what the engines finished (the docstring)."""
    delivered = sum(1 for ld in loads for _, t in ld.admitted if t >= 0)
    cut = sum(ld.cut for ld in loads)
    n, m = ledger["requests"], books["requests"]
    same_requests = all(  # every request here has the same tokens: the ledger's are n of them
        ledger[k] * m == books[k] * n for k in ("prompt_tokens", "completion_tokens")
    )
    return {
        "delivered_whole": delivered,
        "cut_at_clients": cut,
        "finished_not_delivered": m - delivered,
        "billed_not_delivered": n - delivered,
        "every_delivered_billed": n >= delivered,
        "nothing_unfinished_billed": n <= m,
        "ok": delivered <= n <= m and m - delivered <= cut and same_requests,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=180.0, help="measured window, seconds")
    p.add_argument("--gateways", type=int, default=3)
    p.add_argument("--rpm", type=int, default=60)
    p.add_argument("--tpm", type=int, default=6000)
    p.add_argument("--clients", type=int, default=4, help="concurrent clients per key")
    p.add_argument(
        "--background", type=int, default=6, help="clients streaming on an unlimited key"
    )
    p.add_argument("--pause-ms", type=float, default=50.0, help="a client's pause after a 429")
    p.add_argument("--itl-ms", type=float, default=10.0, help="engine: gap between tokens")
    p.add_argument("--settle-s", type=float, default=2.0, help="from the first 429 to t0")
    p.add_argument("--no-kill", dest="kill", action="store_false", help="kill no gateway")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="deepfleet-ha-") as tmp:
        result = asyncio.run(bench(args, Path(tmp)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("rpm", "tpm", "ledger", "engine_books", "ledger_exact", "ledger_check")
            },
            indent=1,
        )
    )
    ok = result["rpm"]["ok"] and result["tpm"]["ok"] and result["ledger_check"]["ok"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
