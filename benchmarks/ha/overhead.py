"""What the PostgreSQL state backend adds to a request: TTFT through a gateway on PostgreSQL vs
the same gateway on SQLite vs the backend direct, interleaved in one run.

The key used has every limit (requests/min, tokens/min, concurrency), set far above the load,
so each request pays every check its backend makes: SQLite's file transactions, PostgreSQL's
round trips (df_enter, df_take for requests and for tokens). The zero-model backend and the
closed-loop load generator are benchmarks/overhead's. Reported per concurrency: TTFT p50 of
each target, added TTFT (target minus direct in the same round), and PostgreSQL's added minus
SQLite's, median over rounds (the issue's budget: at most 0.5 ms).

    .venv/bin/python benchmarks/ha/overhead.py                   # 1 and 32 streams, 5 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks/overhead"))

from loadgen import chat_request, run_load  # noqa: E402
from run import PY, Procs, Target, pct, wait_ready, write_fleet  # noqa: E402
from tests.helpers.postgres import postgres_server  # noqa: E402

from deepfleet.config.schema import GatewaySpec  # noqa: E402
from deepfleet.config.state import StateSpec  # noqa: E402
from deepfleet.fleet.ports import free_port  # noqa: E402
from deepfleet.gateway.store.open import open_state  # noqa: E402

MODEL = "bench"
DSN_ENV = "DEEPFLEET_STATE_DSN"
TARGETS = ("direct", "sqlite", "postgres")
DEFAULT_JSON = ROOT / "benchmarks/results/ha-overhead.json"
HIGH = 10**9  # limits no load here reaches


def start_gateway(name: str, procs: Procs, tmp: Path, backend_url: str, state: StateSpec) -> Target:
    folder = tmp / name
    fleet = write_fleet(folder, backend_url, None)
    (folder / "gateway.json").write_text(GatewaySpec(state=state).model_dump_json())
    port = free_port()
    argv = [PY, "-m", "deepfleet.gateway", "--state-file", str(fleet)]
    argv += ["--settings", str(folder / "gateway.json"), "--port", str(port)]
    return Target(name, f"http://127.0.0.1:{port}", port, procs.start(name, argv))


def wait_keyed(target: Target, secret: str, within_s: float = 60.0) -> None:
    """Ready: a streamed request with the key comes back whole."""
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        | {"stream": True}
    ).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if target.proc is not None and target.proc.popen.poll() is not None:
            sys.exit(f"{target.name} exited; see {target.proc.log}")
        req = urllib.request.Request(target.url + "/v1/chat/completions", body, headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200 and b"[DONE]" in r.read():
                    return
        except OSError:
            pass
        time.sleep(0.25)
    sys.exit(f"{target.name} not ready at {target.url}")


def keyed(request: bytes, secret: str) -> bytes:
    head, _, body = request.partition(b"\r\n\r\n")
    return head + f"\r\nAuthorization: Bearer {secret}".encode() + b"\r\n\r\n" + body


async def one_run(
    target: Target, conc: int, secret: str, args: argparse.Namespace
) -> dict[str, Any]:
    request = chat_request("127.0.0.1", target.port, MODEL, args.tokens, usage=True)
    if target.name != "direct":
        request = keyed(request, secret)
    res = await run_load(
        "127.0.0.1",
        target.port,
        request,
        conc,
        args.warmup,
        args.duration,
        args.drain,
        args.tokens + 4,
        lambda _: None,
        args.stagger,
    )
    ttft = [t * 1000 for t in res.ttft_s]
    return {
        "target": target.name,
        "concurrency": conc,
        "completed": res.completed,
        "errors": res.errors,
        "error_kinds": res.error_kinds,
        "ttft_p50_ms": pct(ttft, 50),
        "ttft_p99_ms": pct(ttft, 99),
        "loadavg": os.getloadavg(),
    }


def summarize(runs: list[dict[str, Any]], concs: list[int], rounds: int) -> list[dict[str, Any]]:
    out = []
    for conc in concs:
        per = {
            t: [r for r in runs if r["target"] == t and r["concurrency"] == conc] for t in TARGETS
        }
        added = {
            t: [per[t][i]["ttft_p50_ms"] - per["direct"][i]["ttft_p50_ms"] for i in range(rounds)]
            for t in ("sqlite", "postgres")
        }
        diff = [p - s for p, s in zip(added["postgres"], added["sqlite"], strict=True)]
        out.append(
            {
                "concurrency": conc,
                "ttft_p50_ms": {
                    t: statistics.median(r["ttft_p50_ms"] for r in per[t]) for t in TARGETS
                },
                "added_ttft_p50_ms": {t: statistics.median(v) for t, v in added.items()},
                "postgres_minus_sqlite_ms": statistics.median(diff),
                "postgres_minus_sqlite_per_round_ms": diff,
                "within_budget": statistics.median(diff) <= 0.5,
                "errors": {t: sum(r["errors"] for r in per[t]) for t in TARGETS},
            }
        )
    return out


async def bench(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    concs = [int(c) for c in args.concurrency.split(",")]
    with postgres_server() as pg:
        os.environ[DSN_ENV] = pg.dsn
        specs = {"sqlite": StateSpec(), "postgres": StateSpec(backend="postgres", dsn_env=DSN_ENV)}
        secrets = {}
        for name, spec in specs.items():
            state = open_state(spec, tmp / name / "keys.db")
            _, secrets[name] = state.keys.create("bench", rpm=HIGH, tpm=HIGH, max_concurrent=HIGH)
            state.close()
        bport = free_port()
        argv = [PY, str(ROOT / "benchmarks/overhead/backend.py"), "--port", str(bport)]
        argv += ["--tokens", str(args.tokens), "--itl-ms", str(args.itl_ms)]
        backend = procs.start("backend", argv)
        backend_url = f"http://127.0.0.1:{bport}"
        wait_ready("backend", backend_url, backend)
        live = {"direct": Target("direct", backend_url, bport, None)}
        for name, spec in specs.items():
            live[name] = start_gateway(name, procs, tmp, backend_url, spec)
        for name in specs:
            wait_keyed(live[name], secrets[name])
        runs = []
        for conc in concs:
            for rnd in range(args.rounds):
                order = TARGETS[rnd % 3 :] + TARGETS[: rnd % 3]
                for name in order:
                    run = await one_run(live[name], conc, secrets.get(name, ""), args)
                    run["round"] = rnd
                    runs.append(run)
                    print(
                        f"c={conc} r={rnd} {name:9s} p50 {run['ttft_p50_ms']:.3f} ms "
                        f"({run['completed']} ok, {run['errors']} err)",
                        file=sys.stderr,
                    )
        runs.sort(key=lambda r: (r["concurrency"], r["round"]))
        procs.stop_all()
    return {
        "benchmark": "ha-overhead",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summarize(runs, concs, args.rounds),
        "runs": runs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tokens", type=int, default=64, help="chunks per stream")
    p.add_argument("--itl-ms", type=float, default=5.0, help="backend gap between tokens")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    p.add_argument("--drain", type=float, default=20.0)
    p.add_argument("--stagger", type=float, default=0.3, help="spread the streams' starts")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="deepfleet-ha-overhead-") as tmp:
        procs = Procs(Path(tmp))
        try:
            result = asyncio.run(bench(args, procs, Path(tmp)))
        finally:
            procs.stop_all()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
