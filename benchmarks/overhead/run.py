"""Gateway overhead benchmark: direct vs deepfleet vs sglang-router vs vllm-router, one run.

A zero-model-time backend (backend.py) streams N vLLM-shaped SSE chunks per request. For each
concurrency (1, 32, 256 streams) every target gets the same closed-loop load (loadgen.py) in
interleaved rounds; each run has a warm-up, then a measured window in which we count streamed
chunks (SSE events) at the client, keep TTFT of the requests sent, and take the CPU time of
the target's process tree (psutil, children included), of the backend, of this load
generator, and of the whole machine (other people's work shows up as `other_cpu_s`).

Reported per concurrency and target: TTFT p50/p99, added TTFT (the target's percentile minus
direct's in the same round, median over rounds; pooled figures kept too), chunks/s, chunks per
CPU-second of the router process tree, and ratios to vllm-router.

    .venv/bin/python benchmarks/overhead/run.py                    # the full comparison
    .venv/bin/python benchmarks/overhead/run.py --targets direct,deepfleet-w1 --rounds 1 \\
        --concurrency 256 --duration 20 --profile deepfleet-w1     # py-spy under load
    .venv/bin/python benchmarks/overhead/run.py --targets direct,deepfleet-w1,deepfleet-base-w1 \\
        --concurrency 1 --baseline-src /tmp/base/src                 # before/after, same rounds

The baseline's gateway reads a fleet.json written by its own code (fleetfile.py run with its
PYTHONPATH), so an older commit that refuses this tree's newer state keys still runs.

Every server binds 127.0.0.1; all processes are started in their own session and stopped
with killpg at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import uvloop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from loadgen import chat_request, run_load  # noqa: E402

from deepfleet.fleet.ports import free_port  # noqa: E402

PY = sys.executable
BIN = Path(PY).parent
MODEL = "bench"
ALL_TARGETS = (
    "direct",
    "deepfleet-w1",
    "deepfleet-w2",
    "sglang-router",
    "vllm-router",
)
REFERENCE = "vllm-router"
SIGSTOP = signal.SIGSTOP
DEFAULT_JSON = ROOT / "benchmarks/results/overhead.json"


def git_head(where: Path) -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return None


def versions(baseline_src: Path | None) -> dict[str, str]:
    out = {}
    for dist in ("sglang-router", "vllm-router", "aiohttp", "uvicorn", "starlette", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    for key, where in (("deepfleet_git", ROOT), ("baseline_git", baseline_src)):
        head = git_head(where) if where is not None else None
        if head:
            out[key] = head
    out["python"] = platform.python_version()
    return out


# -- processes ---------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Procs:
    logdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.logdir / f"{name}.log"
        f = log.open("wb")
        popen = subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        f.close()
        p = Proc(name, popen, log)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGCONT)
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.popen.wait(timeout=5)
            # Workers left behind in the session (uvicorn's spawned children): kill the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()


def tree_cpu(pid: int, root_too: bool = True) -> float:
    """User + system seconds of a process and its live descendants (without the process
    itself when `root_too` is false)."""
    try:
        root = psutil.Process(pid)
        children = root.children(recursive=True)
        procs = [root, *children] if root_too else children
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def tree_pids(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [root.pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def stream_ok(url: str) -> bool:
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        | {"stream": True}
    ).encode()
    req = urllib.request.Request(
        url + "/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200 and b"[DONE]" in r.read()
    except (OSError, http.client.HTTPException):
        return False


def wait_ready(name: str, url: str, proc: Proc | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            sys.exit(f"{name} exited ({proc.popen.returncode}); see {proc.log}")
        if stream_ok(url):
            return
        time.sleep(0.25)
    sys.exit(f"{name} not ready at {url} after {timeout:.0f}s; see {proc.log if proc else ''}")


# -- targets -----------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    url: str
    port: int
    proc: Proc | None  # None: direct (no router)
    supervised: bool = False  # uvicorn --workers N>1: a supervisor process over the workers

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)


def write_fleet(dir: Path, backend_url: str, env: dict[str, str] | None) -> Path:
    """The target's fleet.json, written by the deepfleet that will read it (fleetfile.py run
    with the target's PYTHONPATH): an older gateway refuses keys this tree's state adds."""
    path = dir / "fleet.json"
    argv = [PY, str(HERE / "fleetfile.py"), str(path), backend_url, MODEL]
    run = subprocess.run(
        argv, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        sys.exit(f"cannot write {path} with {env or 'this tree'}: {run.stderr.strip()[-800:]}")
    return path


def start_target(
    name: str,
    procs: Procs,
    tmp: Path,
    backend_url: str,
    log_level: str,
    baseline_src: Path | None = None,
) -> Target:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if name.startswith(("deepfleet-w", "deepfleet-base-w")):
        workers = int(name.rsplit("-w", 1)[1])
        env = None
        if name.startswith("deepfleet-base-w"):
            if baseline_src is None:
                sys.exit(f"{name} needs --baseline-src")
            env = {"PYTHONPATH": str(baseline_src)}
        state = write_fleet(tmp / name, backend_url, env)
        argv = [PY, "-m", "deepfleet.gateway", "--state-file", str(state), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", str(workers)]
        proc = procs.start(name, argv, env)
        return Target(name, url, port, proc, supervised=workers > 1)
    elif name == "sglang-router":
        argv = [PY, "-m", "sglang_router.launch_router", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--prometheus-host", "127.0.0.1"]
        argv += ["--prometheus-port", str(free_port()), "--worker-urls", backend_url]
        argv += ["--policy", "round_robin", "--log-level", "warn" if log_level else "info"]
        proc = procs.start(name, argv)
    elif name == "vllm-router":
        argv = [str(BIN / "vllm-router"), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
        argv += ["--worker-urls", backend_url, "--policy", "round_robin"]
        argv += ["--log-level", "warning" if log_level else "info"]
        proc = procs.start(name, argv)
    else:
        raise SystemExit(f"unknown target {name}")
    return Target(name, url, port, proc)


# -- measuring ---------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    rank = (len(s) - 1) * p / 100.0
    lo = int(rank)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (rank - lo)


async def one_run(
    target: Target, backend_pid: int, conc: int, args: argparse.Namespace
) -> dict[str, Any]:
    snaps: dict[str, dict[str, float]] = {}
    router_pid = target.proc.pid if target.proc else None

    def snap(which: str) -> None:
        snaps[which] = {
            # uvicorn's supervisor serves nothing: its CPU is kept apart (see supervisor_cpu_s)
            "router": tree_cpu(router_pid, not target.supervised) if router_pid else 0.0,
            "supervisor": psutil.Process(router_pid).cpu_times().user
            + psutil.Process(router_pid).cpu_times().system
            if router_pid and target.supervised
            else 0.0,
            "backend": tree_cpu(backend_pid),
            "loadgen": self_cpu(),
            "machine": machine_busy(),
        }

    load_before = os.getloadavg()
    request = chat_request("127.0.0.1", target.port, MODEL, args.tokens, args.usage)
    expect = args.tokens + 2 + (1 if args.usage else 0) + 1  # role, N, finish, [usage], DONE
    res = await run_load(
        "127.0.0.1",
        target.port,
        request,
        conc,
        args.warmup,
        args.duration,
        args.drain,
        expect,
        snap,
        args.stagger,
    )
    cpu = {k: snaps["end"][k] - snaps["start"][k] for k in snaps["start"]}
    own = cpu["router"] + cpu["supervisor"] + cpu["backend"] + cpu["loadgen"]
    return {
        "target": target.name,
        "concurrency": conc,
        "window_s": res.window_s,
        "chunks": res.events,
        "client_reads": res.reads,
        "completed": res.completed,
        "errors": res.errors,
        "error_kinds": res.error_kinds,
        "drained": res.drained,
        "ttft_ms": [round(t * 1000, 4) for t in res.ttft_s],
        "router_cpu_s": cpu["router"],
        "supervisor_cpu_s": cpu["supervisor"],
        "backend_cpu_s": cpu["backend"],
        "loadgen_cpu_s": cpu["loadgen"],
        "machine_busy_s": cpu["machine"],
        "other_cpu_s": max(0.0, cpu["machine"] - own),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def summarize(runs: list[dict[str, Any]], targets: list[str], concs: list[int]) -> list[dict]:
    out = []
    for conc in concs:
        rows = {}
        for t in targets:
            rs = [r for r in runs if r["target"] == t and r["concurrency"] == conc]
            if not rs:
                continue
            ttft = [x for r in rs for x in r["ttft_ms"]]
            chunks = sum(r["chunks"] for r in rs)
            window = sum(r["window_s"] for r in rs)
            rcpu = sum(r["router_cpu_s"] for r in rs)
            per_round = [r["chunks"] / r["router_cpu_s"] for r in rs if r["router_cpu_s"] > 0]
            rows[t] = {
                "concurrency": conc,
                "target": t,
                "rounds": len(rs),
                "requests": sum(r["completed"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
                "ttft_p50_ms": pct(ttft, 50),
                "ttft_p99_ms": pct(ttft, 99),
                "chunks_per_s": chunks / window if window else 0.0,
                "router_cores": rcpu / window if window else 0.0,
                "chunks_per_router_cpu_s": chunks / rcpu if rcpu > 0 else None,
                "chunks_per_router_cpu_s_rounds": [round(x) for x in per_round],
                "chunks_per_client_read": chunks / max(1, sum(r["client_reads"] for r in rs)),
                "backend_cores": sum(r["backend_cpu_s"] for r in rs) / window,
                "loadgen_cores": sum(r["loadgen_cpu_s"] for r in rs) / window,
                "other_cores": sum(r["other_cpu_s"] for r in rs) / window,
                "loadavg_1m": [r["loadavg_before"][0] for r in rs],
            }
        direct = rows.get("direct")
        ref = rows.get(REFERENCE)
        for row in rows.values():
            if direct:
                # Added TTFT: the target's percentile minus direct's in the same round (the
                # machine's load drifts between rounds), then the median over rounds.
                for p in (50, 99):
                    added = _added_per_round(runs, row["target"], conc, p)
                    row[f"added_ttft_p{p}_ms_rounds"] = [round(x, 3) for x in added]
                    row[f"added_ttft_p{p}_ms"] = statistics.median(added) if added else None
                    row[f"added_ttft_p{p}_ms_pooled"] = (
                        row[f"ttft_p{p}_ms"] - direct[f"ttft_p{p}_ms"]
                    )
        for row in rows.values():  # after every row has its added TTFT (the reference too)
            if ref and row["target"] != "direct":
                c, rc = row["chunks_per_router_cpu_s"], ref["chunks_per_router_cpu_s"]
                row["cpu_efficiency_vs_ref"] = c / rc if c and rc else None
                if direct:
                    row["added_p50_vs_ref"] = _ratio(row["added_ttft_p50_ms"], ref)
                    row["added_p99_vs_ref"] = _ratio(
                        row["added_ttft_p99_ms"], ref, "added_ttft_p99_ms"
                    )
            out.append(row)
    return out


def _added_per_round(runs: list[dict[str, Any]], target: str, conc: int, p: float) -> list[float]:
    """Per round: the target's TTFT percentile `p` minus direct's in that round."""
    direct = {
        r["round"]: pct(r["ttft_ms"], p)
        for r in runs
        if r["target"] == "direct" and r["concurrency"] == conc
    }
    return [
        pct(r["ttft_ms"], p) - direct[r["round"]]
        for r in sorted(runs, key=lambda r: r["round"])
        if r["target"] == target and r["concurrency"] == conc and r["round"] in direct
    ]


def _ratio(
    value: float | None, ref: dict[str, Any], key: str = "added_ttft_p50_ms"
) -> float | None:
    r = ref.get(key)
    return value / r if value is not None and r and r > 0 else None


def fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:
            return "-"
        return f"{x:,.{nd}f}"
    return str(x)


def table(summary: list[dict[str, Any]]) -> str:
    head = (
        "| streams | target | TTFT p50 ms | TTFT p99 ms | added p50 ms* | added p99 ms* "
        "| chunks/s | router cores | chunks per router CPU-s | vs vllm-router | chunks/read "
        "| others' cores |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in summary:
        cpu = r["chunks_per_router_cpu_s"]
        lines.append(
            f"| {r['concurrency']} | {r['target']} | {fmt(r['ttft_p50_ms'], 3)} "
            f"| {fmt(r['ttft_p99_ms'], 3)} | {fmt(r.get('added_ttft_p50_ms'), 3)} "
            f"| {fmt(r.get('added_ttft_p99_ms'), 3)} | {fmt(r['chunks_per_s'], 0)} "
            f"| {fmt(r['router_cores'])} | {fmt(float(cpu) if cpu else None, 0)} "
            f"| {fmt(r.get('cpu_efficiency_vs_ref'))} | {fmt(r['chunks_per_client_read'], 1)} "
            f"| {fmt(r['other_cores'])} |"
        )
    lines.append("\n* per round minus direct in the same round, median over rounds")
    return "\n".join(lines)


# -- profiling ---------------------------------------------------------------------------------
def start_profile(procs: Procs, target: Target, out: Path, seconds: float) -> Proc:
    assert target.proc is not None
    pids = tree_pids(target.proc.pid)
    pid = pids[-1]  # uvicorn with --workers N: profile one worker; with 1: the process
    argv = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--rate", "200", "--nonblocking", "--format", "raw", "--output", str(out)]
    return procs.start(f"py-spy-{target.name}", argv)


# -- main --------------------------------------------------------------------------------------
def wait_quiet(max_wait: float, cores: float) -> tuple[float, float]:
    """Between runs our processes idle, so the machine's busy time is other people's work:
    wait (at most `max_wait` s) until it is under `cores`. Returns (waited s, their cores)."""
    start = time.monotonic()
    while True:
        b0 = machine_busy()
        time.sleep(1.0)
        others = machine_busy() - b0
        waited = time.monotonic() - start
        if others < cores or waited >= max_wait:
            return waited, others
        time.sleep(2.0)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def report_line(run: dict[str, Any]) -> str:
    return (
        f"c={run['concurrency']:<3} r={run['round']} {run['target']:<15}"
        f" chunks/s={run['chunks'] / run['window_s']:>9,.0f}"
        f" router_cpu={run['router_cpu_s']:.2f}s"
        f" ttft p50={pct(run['ttft_ms'], 50):.3f}ms p99={pct(run['ttft_ms'], 99):.3f}ms"
        f" other={run['other_cpu_s'] / run['window_s']:.2f}cores"
        f" load={run['loadavg_before'][0]:.2f} err={run['errors']}{run['error_kinds'] or ''}"
    )


def bench(args: argparse.Namespace, procs: Procs) -> dict[str, Any]:
    targets: list[str] = args.targets.split(",")
    for router in {"sglang-router", "vllm-router"} & set(targets):
        try:
            importlib.metadata.version(router)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"{router} is not installed: pip install -e '.[bench]' (or drop the target)")
    concs = [int(c) for c in args.concurrency.split(",")]
    tmp = procs.logdir
    runs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "uptime_start": uptime(),
        "versions": versions(args.baseline_src),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "logs": str(tmp),
    }
    try:
        bport = free_port()
        backend_url = f"http://127.0.0.1:{bport}"
        argv = [PY, str(HERE / "backend.py"), "--port", str(bport)]
        argv += ["--procs", str(args.backend_procs), "--tokens", str(args.tokens)]
        argv += ["--itl-ms", str(args.itl_ms)]
        backend = procs.start("backend", argv)
        wait_ready("backend", backend_url, backend)
        live: dict[str, Target] = {"direct": Target("direct", backend_url, bport, None)}
        for name in targets:
            if name != "direct":
                live[name] = start_target(
                    name, procs, tmp, backend_url, args.quiet_routers, args.baseline_src
                )
        for name, t in live.items():
            wait_ready(name, t.url, t.proc)
        time.sleep(1.0)
        for conc in concs:
            for rnd in range(args.rounds):
                order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
                for name in order:
                    for attempt in range(1 + args.retries):
                        profile = None
                        if args.profile == name:
                            out = HERE / "profiles" / f"{args.profile_tag or name}-{conc}.txt"
                            out.parent.mkdir(exist_ok=True)
                            secs = args.warmup + args.duration
                            profile = start_profile(procs, live[name], out, secs)
                        if args.suspend_idle:  # idle targets stopped: no background CPU
                            for other in live.values():
                                other.signal(signal.SIGCONT if other.name == name else SIGSTOP)
                        waited, others = wait_quiet(args.quiet_wait, args.quiet_cores)
                        run = uvloop.run(one_run(live[name], backend.pid, conc, args))
                        run |= {"round": rnd, "attempt": attempt}
                        run |= {"quiet_wait_s": waited, "others_cores_before": others}
                        runs.append(run)
                        if profile is not None:
                            profile.popen.wait(timeout=60)
                        noisy = run["other_cpu_s"] / run["window_s"] > args.noisy_cores
                        run["noisy"] = noisy
                        print(report_line(run) + (" NOISY" if noisy else ""), flush=True)
                        if not noisy:
                            break
                        time.sleep(args.noisy_pause)
        for t in live.values():
            t.signal(signal.SIGCONT)
        backend_paths = http_get(backend_url + "/metrics")[1].decode()
        meta["backend_metrics"] = [
            line for line in backend_paths.splitlines() if line.startswith("backend_")
        ]
    finally:
        procs.stop_all()
    meta["uptime_end"] = uptime()
    # A run repeated for noise: only its last attempt counts.
    last: dict[tuple[str, int, int], int] = {}
    for i, r in enumerate(runs):
        last[(r["target"], r["concurrency"], r["round"])] = i
    for i, r in enumerate(runs):
        r["counted"] = last[(r["target"], r["concurrency"], r["round"])] == i
    summary = summarize([r for r in runs if r["counted"]], targets, concs)
    for r in runs:  # the raw samples made the file megabytes: keep their percentiles
        ttft = r.pop("ttft_ms")
        r["ttft_ms_samples"] = len(ttft)
        r["ttft_ms_pcts"] = {f"p{p:g}": round(pct(ttft, p), 3) for p in (50, 90, 99, 100)}
    return {"meta": meta, "summary": summary, "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", default=",".join(ALL_TARGETS))
    p.add_argument("--concurrency", default="1,32,256")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=256, help="chunks per stream (max_tokens)")
    p.add_argument("--usage", action="store_true", help="ask for the usage chunk")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    p.add_argument("--drain", type=float, default=20.0)
    p.add_argument("--backend-procs", type=int, default=1)
    p.add_argument("--itl-ms", type=float, default=0.0, help="backend gap between tokens")
    p.add_argument(
        "--stagger", type=float, default=0.0, help="spread slot starts over this many seconds"
    )
    p.add_argument("--profile", help="target to run py-spy record on (raw output in profiles/)")
    p.add_argument("--profile-tag", help="profile file name instead of the target's")
    p.add_argument(
        "--noisy-cores",
        type=float,
        default=0.5,
        help="repeat a run when other processes used more cores than this during it",
    )
    p.add_argument("--retries", type=int, default=1, help="repeats of a noisy run")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=45.0,
        help="before each run, wait up to this long for other processes to calm down",
    )
    p.add_argument("--quiet-cores", type=float, default=0.3, help="what counts as calm")
    p.add_argument(
        "--no-suspend-idle",
        dest="suspend_idle",
        action="store_false",
        help="leave the targets not being measured running (default: SIGSTOP them)",
    )
    p.add_argument("--noisy-pause", type=float, default=3.0, help="seconds before a repeat")
    p.add_argument(
        "--paced",
        action="store_true",
        help="realistic pacing preset: 64 tokens at 20 ms (50 tok/s per stream), staggered "
        "starts, 32 and 256 streams, 6 s windows",
    )
    p.add_argument("--quiet-routers", default="1", help="routers at log level warn ('' = info)")
    p.add_argument(
        "--baseline-src",
        type=Path,
        help="src/ of another deepfleet checkout (e.g. `git worktree add`), run by the "
        "deepfleet-base-wN targets: before/after in the same rounds",
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args()
    if args.paced:
        args.tokens, args.itl_ms, args.stagger = 64, 20.0, 1.3
        args.warmup, args.duration = max(args.warmup, 2.0), max(args.duration, 6.0)
        if args.concurrency == "1,32,256":
            args.concurrency = "32,256"
        if args.json == DEFAULT_JSON:
            args.json = DEFAULT_JSON.with_name("overhead-paced.json")

    procs = Procs(Path(tempfile.mkdtemp(prefix="deepfleet-overhead-")))

    def on_signal(signum: int, frame: object) -> None:
        # Raising here could land inside the event loop's C code and be swallowed:
        # stop what we started, then leave.
        signal.signal(signum, signal.SIG_IGN)
        procs.stop_all()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    result = bench(args, procs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print()
    print(table(result["summary"]))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
