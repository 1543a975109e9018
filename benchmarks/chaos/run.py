"""Chaos benchmark (issue 20 item 5): a real fleet under mixed greedy and sampled streams while
engines are SIGKILLed or SIGSTOPped on a schedule; reports what clients saw.

    PYTHONPATH=src .venv/bin/python benchmarks/chaos/run.py --replicas 3 --streams 8 \
        --duration 600 --faults kill:60            # SIGKILL one engine every 60 s
    PYTHONPATH=src .venv/bin/python benchmarks/chaos/run.py --short   # CI: 2 replicas, 90 s

Each stream is a chat request; every other one greedy (temperature 0) from a fixed set of
prompts. Before the faults begin, each greedy prompt runs once undisturbed: its text is the
reference. The report counts requests completed with [DONE] and no error event, client-visible
errors, hangs (no byte for `--hang-s`), migrations (from the gateway's /metrics), and the greedy
streams whose text differs from the reference. The fleet is started with `deepfleet up` in its
own state folder and stopped at the end. Faults: `kill:SECONDS` (SIGKILL a random ready engine
every SECONDS) and `stop:SECONDS:HOLD` (SIGSTOP one for HOLD seconds, then SIGCONT).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import MODEL, Fleet, running_fleet, status_json  # noqa: E402

PROMPTS = [f"Tell a short story about a {w}." for w in ("cat", "ship", "tree", "clock", "river")]


@dataclass
class Report:
    requests: int = 0
    completed: int = 0
    errors: int = 0
    hangs: int = 0
    migrations: float = 0.0
    greedy_checked: int = 0
    greedy_differs: int = 0
    faults: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """What each failed request saw (the first 50), with the time it ended."""
    greedy_diffs: list[str] = field(default_factory=list)
    """Each greedy transcript that differs from its reference: where they part (first 20)."""


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
) -> tuple[str, str]:
    """('ok' | 'error: why' | 'hang', text)."""
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


async def faults(fleet: Fleet, spec: str, until: float, report: Report) -> None:
    kind, every, *rest = spec.split(":")
    while time.monotonic() + float(every) < until:
        await asyncio.sleep(float(every))
        reps = [r for r in status_json(fleet.state_dir)["replicas"] if r["state"] == "ready"]  # type: ignore[union-attr]
        if not reps:
            continue
        victim = random.choice(reps)
        pid = int(victim["pid"])
        report.faults.append(f"{time.strftime('%H:%M:%S')} {kind} {victim['id']}")
        if kind == "kill":
            os.kill(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(float(rest[0]) if rest else 30)
            os.kill(pid, signal.SIGCONT)


async def migrations(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("deepfleet_migrations_total")
    )


async def drive(fleet: Fleet, args: argparse.Namespace) -> Report:
    report = Report()
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        reference = {}
        for p in PROMPTS:
            status, text = await one(session, fleet.url, body(p, True, args.tokens), args.hang_s)
            reference[p] = text if status == "ok" else None
        until = time.monotonic() + args.duration
        chaos = [asyncio.create_task(faults(fleet, f, until, report)) for f in args.faults]

        async def worker(i: int) -> None:
            n = 0
            while time.monotonic() < until:
                greedy = (i + n) % 2 == 0
                prompt = PROMPTS[(i + n) % len(PROMPTS)]
                n += 1
                status, text = await one(
                    session, fleet.url, body(prompt, greedy, args.tokens), args.hang_s
                )
                report.requests += 1
                report.completed += status == "ok"
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
        report.migrations = await migrations(session, fleet.url)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--faults", nargs="*", default=["kill:60"])
    ap.add_argument("--hang-s", type=float, default=120)
    ap.add_argument("--short", action="store_true", help="CI: 2 replicas, 4 streams, 90 s")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.short:
        args.replicas, args.streams, args.duration, args.faults = 2, 4, 90, ["kill:40"]
    config = (
        f"models:\n  - name: {MODEL}\n    source: bundled\n    engine: vllm-cpu\n"
        f"    replicas: {args.replicas}\n    max_model_len: 2048\n"
    )
    with tempfile.TemporaryDirectory() as d, running_fleet(Path(d), config) as fleet:
        report = asyncio.run(drive(fleet, args))
    out = json.dumps(asdict(report), indent=2)
    print(out)
    if args.json:
        args.json.write_text(out)


if __name__ == "__main__":
    main()
