"""Two bound vLLM CPU engines of the bundled model (A on core 0, B on core 1 of a 2-core box,
no deepfleet in between), side by side in one run, started two ways:

- `inherit`: every CPU allowed (what deepfleet did before: vLLM binds its OpenMP workers,
  the rest of the process floats);
- `own`: each engine's process allowed only the CPUs no other engine is bound to (taskset),
  what deepfleet does now (fleet/cpu_share.py `cpu_affinity`).

Per round and mode: A starts and serves 8 streams; B starts meanwhile (its start under load,
`--start-limit` at most: `inherit` stalls, docs/autoscaling.md); then 4 streams on each for
`--steady` seconds, counting streamed tokens per engine. The ratio own/inherit of the steady
tokens/s is the cost (or gain) of keeping each engine's API server on its own cores.

    .venv/bin/python benchmarks/autoscale/affinity.py --rounds 2 --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from stall_probe import load as stall_load
from stall_probe import ready, start

from deepfleet.catalog import bundled
from deepfleet.fleet.cpu_share import cpu_affinity, cpu_binding

PORTS = (18011, 18012)


class Counter:
    def __init__(self) -> None:
        self.tokens = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.tokens += 1


def load(model: str, port: int, n: int, count: Counter) -> threading.Event:
    stop = threading.Event()
    job = (model, port, stop, count.add, 300)  # 300-token streams
    for _ in range(n):
        threading.Thread(target=stall_load, args=job, daemon=True).start()
    return stop


def wait_ready(port: int, proc: subprocess.Popen[bytes], limit: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if ready(port):
            return time.monotonic() - t0
        if proc.poll() is not None:
            raise SystemExit(f"engine on {port} exited {proc.returncode}")
        time.sleep(1)
    return None


def one_round(model: str, mode: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    binds = [cpu_binding(cores, i, 2) or "nobind" for i in range(2)]
    allowed = [cpu_affinity(cores, i, 2) if mode == "own" else None for i in range(2)]
    cpus = [",".join(map(str, a)) if a else None for a in allowed]
    procs: list[subprocess.Popen[bytes]] = []
    stops: list[threading.Event] = []
    try:
        procs.append(start(model, PORTS[0], binds[0], out / f"{mode}-a.log", cpus[0]))
        if wait_ready(PORTS[0], procs[0], 300) is None:
            raise SystemExit(f"engine A not ready in 300 s ({out / f'{mode}-a.log'})")
        stops.append(load(model, PORTS[0], 8, Counter()))
        time.sleep(5)
        procs.append(start(model, PORTS[1], binds[1], out / f"{mode}-b.log", cpus[1]))
        b_start = wait_ready(PORTS[1], procs[1], args.start_limit)
        stops.pop().set()
        if b_start is None and wait_ready(PORTS[1], procs[1], 300) is None:
            raise SystemExit(f"engine B not ready 300 s after A's load ended ({mode})")
        time.sleep(3)  # A's streams finish
        counts = [Counter(), Counter()]
        stops += [load(model, PORTS[i], 4, counts[i]) for i in range(2)]
        time.sleep(5)  # streams under way
        base = [c.tokens for c in counts]
        time.sleep(args.steady)
        per_s = [round((c.tokens - b) / args.steady, 2) for c, b in zip(counts, base, strict=True)]
        return {
            "mode": mode,
            "bind": binds,
            "allowed": cpus,
            "b_ready_under_load_s": None if b_start is None else round(b_start, 1),
            "start_limit_s": args.start_limit,
            "tokens_per_s": per_s,
            "total_tokens_per_s": round(sum(per_s), 2),
        }
    finally:
        for s in stops:
            s.set()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 9)
            p.wait()
        time.sleep(3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steady", type=float, default=45.0, help="seconds of 4+4 streams")
    p.add_argument("--start-limit", type=float, default=150.0, help="B's start under load")
    p.add_argument("--modes", default="inherit,own")
    p.add_argument("--out", type=Path, default=Path("/tmp/affinity-bench"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if psutil.cpu_count() < 2:
        raise SystemExit("needs 2 CPUs or more")
    model = str(bundled.prepare().path)
    args.out.mkdir(parents=True, exist_ok=True)
    rounds = []
    for r in range(args.rounds):
        for mode in args.modes.split(","):
            row = one_round(model, mode, args, args.out) | {"round": r}
            print(json.dumps(row), flush=True)
            rounds.append(row)
    summary: dict[str, Any] = {}
    for mode in args.modes.split(","):
        mine = [r for r in rounds if r["mode"] == mode]
        summary[mode] = {
            "steady_tokens_per_s_median": statistics.median(r["total_tokens_per_s"] for r in mine),
            "b_ready_under_load_s": [r["b_ready_under_load_s"] for r in mine],
        }
    if {"inherit", "own"} <= summary.keys():
        summary["own_over_inherit"] = round(
            summary["own"]["steady_tokens_per_s_median"]
            / summary["inherit"]["steady_tokens_per_s_median"],
            3,
        )
    report = {"host_cpus": psutil.cpu_count(), "rounds": rounds, "summary": summary}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
