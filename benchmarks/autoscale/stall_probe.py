"""Probe for the CPU start stall (docs/autoscaling.md, "Known stall"): two plain vLLM CPU
servers of the bundled model, no deepfleet in between. Engine A is bound to core 0 and kept
busy with 8 streams; engine B (bound to another core) starts meanwhile. Every 3 s it prints
B's processes whose allowed CPUs are not all cores or that are running, and after 90 s it
dumps their Python stacks with py-spy. Ends when B is ready, or after --limit seconds.

    .venv/bin/python benchmarks/autoscale/stall_probe.py            # B on core 1, A on 0
    .venv/bin/python benchmarks/autoscale/stall_probe.py --bind-b nobind --bind-a nobind
    .venv/bin/python benchmarks/autoscale/stall_probe.py --taskset-b 1   # B allowed core 1 only

Seen on the 2-core box (2026-12-07): B's EngineCore process had Cpus_allowed "0" from 18 s
after B's start, ran at about 1% CPU and was still importing vLLM modules 9 minutes later;
when A's load stopped its mask was 0-1 again and B was ready about 30 s later.
The pinning is MKL's core count inside `import torch` (docs/autoscaling.md); with
--taskset-b 1 it never visits A's core and B was ready in 33 s. deepfleet now starts every
bound CPU replica so (fleet/cpu_share.py `cpu_affinity`; benchmarks/autoscale/affinity.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from deepfleet.catalog import bundled

PY = sys.executable
SPY = str(Path(PY).parent / "py-spy")


def start(
    model: str, port: int, bind: str, log: Path, cpus: str | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=bind, VLLM_CPU_KVCACHE_SPACE="1")
    argv = ["taskset", "-c", cpus] if cpus else []
    argv += [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32"]
    argv += ["--max-model-len", "2048", "--enforce-eager", "--disable-uvicorn-access-log"]
    with log.open("w") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def load(
    model: str,
    port: int,
    stop: threading.Event,
    on_token: Callable[[], None] | None = None,
    tokens: int = 400,
) -> None:
    """Stream completions of `tokens` tokens one after another until `stop`; `on_token` is
    called for each streamed chunk (a token)."""
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": tokens, "stream": True}
    data = json.dumps({**body, "ignore_eos": True}).encode()
    url = f"http://127.0.0.1:{port}/v1/completions"
    while not stop.is_set():
        try:
            req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                for line in r:
                    if on_token is not None and line.startswith(b"data: {"):
                        on_token()
                    if stop.is_set():
                        break
        except OSError:
            time.sleep(0.5)


def threads_of(root: int) -> list[tuple[int, str, str, str]]:
    """(pid, thread name, allowed CPUs, state) of every thread under `root`."""
    rows = []
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return rows
    for p in procs:
        for task in Path(f"/proc/{p.pid}/task").glob("*"):
            try:
                fields = dict(
                    line.split(":", 1) for line in (task / "status").read_text().splitlines()
                )
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue
            allowed = fields["Cpus_allowed_list"].strip()
            rows.append((p.pid, comm, allowed, fields["State"].strip()[:1]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bind-a", default="0")
    p.add_argument("--bind-b", default="1")
    p.add_argument("--taskset-b", help="start B with only these CPUs allowed (taskset -c)")
    p.add_argument("--limit", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=Path("/tmp/stall-probe"))
    args = p.parse_args()
    model = str(bundled.prepare().path)
    args.out.mkdir(parents=True, exist_ok=True)
    cores = f"0-{psutil.cpu_count() - 1}"
    a = start(model, 18001, args.bind_a, args.out / "a.log")
    b: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    try:
        t0 = time.monotonic()
        while not ready(18001):
            if time.monotonic() - t0 > 300 or a.poll() is not None:
                sys.exit(f"engine A not ready; see {args.out / 'a.log'}")
            time.sleep(1)
        for _ in range(8):
            threading.Thread(target=load, args=(model, 18001, stop), daemon=True).start()
        time.sleep(10)
        print(f"this probe's threads before B starts: {sorted(set(threads_of(os.getpid())))}")
        print(f"engine A's threads: {sorted(set(threads_of(a.pid)))}", flush=True)
        b = start(model, 18002, args.bind_b, args.out / "b.log", args.taskset_b)
        t1, dumped = time.monotonic(), False
        while not ready(18002) and time.monotonic() - t1 < args.limit:
            time.sleep(3)
            rows = sorted(set(threads_of(b.pid)))
            odd = [r for r in rows if r[2] != cores or r[3] == "R"]
            print(f"t={time.monotonic() - t1:5.0f}s {odd[:10]}", flush=True)
            if time.monotonic() - t1 > 90 and not dumped:
                dumped = True
                for pid in {r[0] for r in rows}:
                    with (args.out / f"dump-{pid}.txt").open("w") as out:
                        cmd = [SPY, "dump", "--pid", str(pid)]
                        try:  # py-spy itself can stall on a starved process
                            subprocess.run(cmd, stdout=out, stderr=out, timeout=30, check=False)
                        except subprocess.TimeoutExpired:
                            out.write("py-spy dump timed out after 30 s\n")
        print(f"B ready: {ready(18002)} after {time.monotonic() - t1:.0f} s", flush=True)
    finally:
        stop.set()
        for proc in (a, b):
            if proc is not None:
                os.killpg(proc.pid, 9)


if __name__ == "__main__":
    main()
