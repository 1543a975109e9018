"""Chaos benchmark (issue 20 item 5): a real fleet under mixed greedy and sampled streams while
engines are SIGKILLed or SIGSTOPped and gateway workers SIGKILLed on a schedule; reports what
clients saw.

    PYTHONPATH=src .venv/bin/python benchmarks/chaos/run.py --replicas 3 --streams 8 \
        --duration 600 --faults kill:60            # SIGKILL one engine every 60 s
    PYTHONPATH=src .venv/bin/python benchmarks/chaos/run.py --short   # CI: 2 replicas, 90 s
    ... --faults stop:60:30 --stall-timeout 10     # SIGSTOP one for 30 s; streams move at 10 s
    ... --faults gwkill:45 --gateway-workers 2     # SIGKILL a gateway worker every 45 s

Each stream is a chat request; every other one greedy (temperature 0) from a fixed set of
prompts. Before the faults begin, each greedy prompt runs once undisturbed: its text is the
reference. The report counts requests completed with [DONE] and no error event, client-visible
errors, hangs (no byte for `--hang-s`), migrations (from the gateway's /metrics), and the greedy
streams whose text differs from the reference. The fleet is started with `deepfleet up` in its
own state folder and stopped at the end. The faults and what each means are in faults.py.
Streams that a killed gateway worker held are counted apart (`killed_worker_streams`), not as
errors: no gateway can migrate its own death.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from faults import FaultLog, inject  # noqa: E402
from tests.e2e.conftest import MODEL, Fleet, running_fleet  # noqa: E402

from deepfleet.cli.common import current_state  # noqa: E402
from deepfleet.cli.live import state_json  # noqa: E402

PROMPTS = [f"Tell a short story about a {w}." for w in ("cat", "ship", "tree", "clock", "river")]


@dataclass
class Report:
    requests: int = 0
    completed: int = 0
    errors: int = 0
    hangs: int = 0
    killed_worker_streams: int = 0
    """Streams that failed because the gateway worker holding them was killed (gwkill)."""
    migrations: float = 0.0
    migrations_by_reason: dict[str, float] = field(default_factory=dict)
    greedy_checked: int = 0
    greedy_differs: int = 0
    faults: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """What each failed request saw (the first 50), with the time it ended."""
    greedy_diffs: list[str] = field(default_factory=list)
    """Each greedy transcript that differs from its reference: where they part (first 20)."""
    gateway_worker_restarts: list[dict[str, Any]] = field(default_factory=list)
    """Each killed gateway worker: its pid, its replacement's, and how long that took."""
    settings: dict[str, Any] = field(default_factory=dict)


# The client port of the request in flight in this task (see PortConnector).
CLIENT_PORT: contextvars.ContextVar[list[int]] = contextvars.ContextVar("client_port")


class PortConnector(aiohttp.TCPConnector):
    """Notes each request's client port in the caller's CLIENT_PORT box, so a failed stream
    can be matched to the gateway worker that held its connection."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109
        conn = await super().connect(req, traces, timeout)
        box = CLIENT_PORT.get(None)
        if box is not None and conn.transport is not None:
            box.append(conn.transport.get_extra_info("sockname")[1])
        return conn


def body(prompt: str, greedy: bool, tokens: int) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0 if greedy else 0.8,
        "ignore_eos": True,
        "stream": True,
    }


async def one(
    session: aiohttp.ClientSession, url: str, req: dict[str, object], hang_s: float
) -> tuple[str, str, int | None]:
    """('ok' | 'error: why' | 'hang', text, the client port), in a task of its own."""
    port: list[int] = []
    CLIENT_PORT.set(port)
    status, text = await _one(session, url, req, hang_s)
    return status, text, port[-1] if port else None


async def _one(
    session: aiohttp.ClientSession, url: str, req: dict[str, object], hang_s: float
) -> tuple[str, str]:
    text = ""
    try:
        async with session.post(url + "/v1/chat/completions", json=req) as resp:
            if resp.status != 200:
                return f"error: HTTP {resp.status} {(await resp.text())[:200]}", text
            last = ""
            while True:
                line = await asyncio.wait_for(resp.content.readline(), hang_s)
                if not line:
                    break
                data = line.decode().strip().removeprefix("data: ")
                if not data:
                    continue
                last = data
                if data != "[DONE]":
                    obj = json.loads(data)
                    if "error" in obj:
                        return f"error: event {json.dumps(obj['error'])[:200]}", text
                    for c in obj["choices"]:
                        text += c["delta"].get("content") or ""
            return ("ok" if last == "[DONE]" else "error: no [DONE]"), text
    except TimeoutError:
        return "hang", text
    except aiohttp.ClientError as exc:
        return f"error: {type(exc).__name__} {exc}", text


def parting(text: str, ref: str) -> str:
    """Where a transcript leaves its reference, and the next characters of each."""
    at = next((k for k, (a, b) in enumerate(zip(text, ref, strict=False)) if a != b), None)
    at = min(len(text), len(ref)) if at is None else at
    return f"parts at char {at}: {text[at : at + 40]!r} vs {ref[at : at + 40]!r}"


async def migrations(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """deepfleet_migrations_total by reason."""
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("deepfleet_migrations_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = out.get(reason, 0.0) + float(line.split()[-1])
    return out


async def drive(fleet: Fleet, args: argparse.Namespace) -> Report:
    report = Report()
    log = FaultLog()
    timeout = aiohttp.ClientTimeout(total=None)

    def state() -> dict[str, object]:  # what `deepfleet status --json` prints, in-process
        return state_json(current_state(fleet.state_dir))

    async with aiohttp.ClientSession(timeout=timeout, connector=PortConnector()) as session:
        reference = {}
        for p in PROMPTS:
            req = body(p, True, args.tokens)
            status, text, _ = await one(session, fleet.url, req, args.hang_s)
            reference[p] = text if status == "ok" else None
        until = time.monotonic() + args.duration
        chaos = [asyncio.create_task(inject(f, until, state, log)) for f in args.faults]

        async def worker(i: int) -> None:
            n = 0
            while time.monotonic() < until:
                greedy = (i + n) % 2 == 0
                prompt = PROMPTS[(i + n) % len(PROMPTS)]
                n += 1
                status, text, port = await one(
                    session, fleet.url, body(prompt, greedy, args.tokens), args.hang_s
                )
                report.requests += 1
                report.completed += status == "ok"
                if status != "ok" and log.killed_worker_held(port):
                    report.killed_worker_streams += 1
                    status = f"killed gateway worker held it: {status}"
                else:
                    report.errors += status.startswith("error")
                    report.hangs += status == "hang"
                if status != "ok" and len(report.failures) < 50:
                    report.failures.append(f"{time.strftime('%H:%M:%S')} {status}")
                ref = reference.get(prompt)
                if greedy and status == "ok" and ref is not None:
                    report.greedy_checked += 1
                    if text != ref:
                        report.greedy_differs += 1
                        if len(report.greedy_diffs) < 20:
                            report.greedy_diffs.append(f"{prompt!r} {parting(text, ref)}")

        await asyncio.gather(*(worker(i) for i in range(args.streams)))
        for t in chaos:
            t.cancel()
        ended = await asyncio.gather(*chaos, return_exceptions=True)  # SIGCONT a stopped one
        for spec, exc in zip(args.faults, ended, strict=True):
            if isinstance(exc, Exception):  # a schedule that died early would look calm
                log.note(f"fault schedule {spec} stopped early: {type(exc).__name__} {exc}")
        report.migrations_by_reason = await migrations(session, fleet.url)
        report.migrations = sum(report.migrations_by_reason.values())
    report.faults = log.lines
    report.gateway_worker_restarts = [
        {"killed": k.pid, "held": len(k.client_ports)}
        | {"replaced_by": k.replaced_by, "restart_s": k.restart_s}
        for k in log.worker_kills
    ]
    return report


def fleet_yaml(args: argparse.Namespace) -> str:
    return (
        f"models:\n  - name: {MODEL}\n    source: bundled\n    engine: vllm-cpu\n"
        f"    replicas: {args.replicas}\n    max_model_len: 2048\n"
        f"gateway:\n  workers: {args.gateway_workers}\n"
        f"  stall_timeout_s: {args.stall_timeout}\n"
    )


def check_faults(args: argparse.Namespace) -> None:
    for spec in args.faults:
        kind, _, *rest = spec.split(":")
        hold = float(rest[0]) if rest else 30.0
        if kind == "stop" and hold <= args.stall_timeout:
            print(
                f"note: {spec} holds an engine {hold:g}s, not longer than the stall deadline "
                f"(--stall-timeout {args.stall_timeout:g}): its streams wait, not migrate",
                file=sys.stderr,
            )
        if kind == "gwkill" and args.gateway_workers < 2:
            sys.exit(f"{spec} needs --gateway-workers 2 or more")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--faults", nargs="*", default=["kill:60"])
    ap.add_argument("--hang-s", type=float, default=120)
    ap.add_argument("--gateway-workers", type=int, default=1, help="gateway.workers")
    ap.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        help="gateway.stall_timeout_s: silence after which a stream migrates (stop faults "
        "must hold an engine longer)",
    )
    ap.add_argument("--short", action="store_true", help="CI: 2 replicas, 4 streams, 90 s")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.short:
        args.replicas, args.streams, args.duration, args.faults = 2, 4, 90, ["kill:40"]
    check_faults(args)
    with tempfile.TemporaryDirectory() as d, running_fleet(Path(d), fleet_yaml(args)) as fleet:
        report = asyncio.run(drive(fleet, args))
    report.settings = {
        k: getattr(args, k)
        for k in ("replicas", "streams", "duration", "tokens", "faults", "gateway_workers")
    } | {"stall_timeout_s": args.stall_timeout}
    out = json.dumps(asdict(report), indent=2)
    print(out)
    if args.json:
        args.json.write_text(out)


if __name__ == "__main__":
    main()
