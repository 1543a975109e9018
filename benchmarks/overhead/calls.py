"""Python work per request of the gateway, counted: cProfile call counts, this tree against a
baseline checkout, on the overhead benchmark's backend (backend.py) at 1 stream.

run.py's chunks per router CPU-second move by 10-15% from round to round on the 2-core box
(the closed loop batches events differently per round: more client writes per request is more
CPU per chunk), more than the 5% being judged. Calls per request move much less: each gateway
serves `--warm` streamed requests, then `--warm + --requests` in a second run; the difference
of the two profiles, divided by `--requests`, is what one more request costs, per function
(calls, and cProfile's CPU time, inflated by the profiler's own cost per call, so read it as a
ranking, not as a duration). The functions called once per request (admission, routing, the
proxy) give the same counts in every run; those called per socket read (the relay's loop,
`read`, `send`) scale with the reads per request, which still depend on the box's load (how
many events one read brings), so compare those as calls per read.

    PYTHONPATH=src .venv/bin/python benchmarks/overhead/calls.py --baseline-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = sys.executable
MODEL = "bench"
PROFILED = (
    "import cProfile, sys, time\n"
    "from deepfleet.gateway.server import main\n"
    "p = cProfile.Profile(time.thread_time)\n"
    "p.enable()\n"
    "try:\n"
    "    main(sys.argv[2:])\n"
    "finally:\n"
    "    p.disable()\n"
    "    p.dump_stats(sys.argv[1])\n"
)
Row = tuple[float, float]  # calls, CPU microseconds (cProfile's clock) per request


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_up(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            c.getresponse().read()
            return
        time.sleep(0.2)
    sys.exit(f"{what} did not answer on :{port} in 60 s")


def send(port: int, n: int, tokens: int) -> None:
    """`n` streamed chat requests one after another on one keep-alive connection."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
            "max_tokens": tokens,
            "stream": True,
        }
    )
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    for _ in range(n):
        c.request("POST", "/v1/chat/completions", body, headers)
        r = c.getresponse()
        data = r.read()
        if r.status != 200 or data.count(b"data: ") < tokens:
            sys.exit(f"bad answer ({r.status}): {data[:200]!r}")


def profile(label: str, src: Path, backend_port: int, n: int, tokens: int, tmp: Path) -> Path:
    """Serve `n` requests on a profiled gateway run from `src`; the stats file."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    fleet = tmp / f"fleet-{label}-{n}.json"
    subprocess.run(
        [PY, str(HERE / "fleetfile.py"), str(fleet), f"http://127.0.0.1:{backend_port}", MODEL],
        env=env,
        check=True,
    )
    port = free_port()
    out = tmp / f"{label}-{n}.prof"
    argv = [PY, "-c", PROFILED, str(out), "--state-file", str(fleet)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with (tmp / "gateway.log").open("ab") as log:
        gw = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=ROOT)
    try:
        wait_up(port, gw, "the gateway")
        send(port, n, tokens)
    finally:
        gw.send_signal(signal.SIGINT)  # uvicorn stops; the profile is written
        gw.wait(timeout=30)
    return out


def per_request(a: Path, b: Path, n: int) -> dict[str, Row]:
    """Per function: (calls, CPU us) of profile `b` minus profile `a`, over `n` requests."""
    sa, sb = pstats.Stats(str(a)).stats, pstats.Stats(str(b)).stats  # type: ignore[attr-defined]
    out: dict[str, Row] = {}
    for key in set(sa) | set(sb):
        ca, cb = sa.get(key, (0, 0, 0.0, 0.0, {})), sb.get(key, (0, 0, 0.0, 0.0, {}))
        where = key[0].split("/src/")[-1].split("site-packages/")[-1]
        name = f"{key[2]} ({where})"  # one row per function, whatever its line
        calls, us = out.get(name, (0.0, 0.0))
        out[name] = (calls + (cb[1] - ca[1]) / n, us + (cb[2] - ca[2]) / n * 1e6)
    return {k: v for k, v in out.items() if abs(v[0]) >= 0.005 or abs(v[1]) >= 0.05}


def measure(
    label: str, src: Path, args: argparse.Namespace, backend_port: int, tmp: Path
) -> dict[str, Row]:
    a = profile(label, src, backend_port, args.warm, args.tokens, tmp)
    b = profile(label, src, backend_port, args.warm + args.requests, args.tokens, tmp)
    return per_request(a, b, args.requests)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", type=Path, default=ROOT / "src")
    p.add_argument("--baseline-src", type=Path, required=True)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warm", type=int, default=200)
    p.add_argument("--tokens", type=int, default=256, help="chunks per stream (max_tokens)")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="deepfleet-calls-") as t:
        tmp = Path(t)
        port = free_port()
        backend_argv = [PY, str(HERE / "backend.py"), "--port", str(port), "--procs", "1"]
        backend_argv += ["--tokens", str(args.tokens), "--itl-ms", "0"]
        with (tmp / "backend.log").open("wb") as log:
            backend = subprocess.Popen(backend_argv, stdout=log, stderr=log, cwd=ROOT)
        try:
            wait_up(port, backend, "the backend")
            now = measure("now", args.src.resolve(), args, port, tmp)
            base = measure("base", args.baseline_src.resolve(), args, port, tmp)
        finally:
            backend.terminate()
            backend.wait(timeout=10)
    report(now, base, args)


def report(now: dict[str, Row], base: dict[str, Row], args: argparse.Namespace) -> None:
    def total(d: dict[str, Row]) -> Row:
        return sum(v[0] for v in d.values()), sum(v[1] for v in d.values())

    zero = (0.0, 0.0)
    rows = sorted(
        set(now) | set(base),
        key=lambda k: -abs(now.get(k, zero)[0] - base.get(k, zero)[0]),
    )
    (nc, nu), (bc, bu) = total(now), total(base)
    print(f"per request: {nc:.1f} calls now, {bc:.1f} baseline ({nc - bc:+.1f});")
    print(f"cProfile CPU {nu:.0f} us now, {bu:.0f} us baseline (profiler cost included)")
    print("| function | calls now | calls baseline | cProfile us now | us baseline |")
    print("|---|---|---|---|---|")
    for k in rows[: args.top]:
        (ac, au), (bc_, bu_) = now.get(k, zero), base.get(k, zero)
        print(f"| {k} | {ac:.2f} | {bc_:.2f} | {au:.2f} | {bu_:.2f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "calls_per_request": {"now": nc, "baseline": bc},
                    "cprofile_us_per_request": {"now": nu, "baseline": bu},
                    "functions": {
                        k: {"now": now.get(k, zero), "baseline": base.get(k, zero)} for k in rows
                    },
                },
                indent=1,
            )
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
