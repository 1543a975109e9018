"""One gateway SIGKILLed (or SIGTERMed: it drains) under N streams through HAProxy
(`gateway.instances: 3`, fake engines): which streams fail, how soon new requests succeed,
whether anything hangs.

Used by tests/fleet/test_lb.py and benchmarks/lb/run.py (which writes benchmarks/results/)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from deepfleet.fleet import readiness
from deepfleet.fleet.lifecycle import down
from deepfleet.fleet.ports import free_port, port_in_use

HANG_S = 60.0  # a stream that has not ended by then is a hang
BODY = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Outcome:
    gateway: str = ""
    ok: bool = False
    error: str = ""
    hung: bool = False
    started: float = 0.0
    first_byte: float | None = None
    ended: float = 0.0


@dataclass
class Report:
    streams: int
    gateways: int
    signal: str = "SIGKILL"
    victim: str = ""
    carried_by_victim: int = 0
    failed: int = 0
    failed_on_victim: int = 0
    failed_elsewhere: int = 0
    hangs: int = 0
    new_requests: int = 0
    new_ok: int = 0
    first_new_ok_after_kill_s: float | None = None
    new_ttfb_max_s: float | None = None
    errors: list[str] = field(default_factory=list)
    load_avg_1m: float = 0.0


async def one(session: aiohttp.ClientSession, url: str) -> Outcome:
    o = Outcome(started=time.monotonic())
    try:
        async with asyncio.timeout(HANG_S):
            async with session.post(url + "/v1/chat/completions", json=BODY) as r:
                o.gateway = r.headers.get("X-Deepfleet-Gateway", "")
                last = b""
                async for line in r.content:
                    if o.first_byte is None:
                        o.first_byte = time.monotonic()
                    if line.strip():
                        last = line.strip()
                        if b'"error"' in last:
                            o.error = last.decode()[:200]
                o.ok = r.status == 200 and last == b"data: [DONE]" and not o.error
                if not o.ok and not o.error:
                    o.error = f"status {r.status}, last line {last[:100]!r}"
    except TimeoutError:
        o.hung, o.error = True, "hang"
    except (aiohttp.ClientError, ConnectionError) as exc:
        o.error = f"{type(exc).__name__}: {exc}"
    o.ended = time.monotonic()
    return o


async def all_up(url: str, gateways: int, timeout_s: float = 20) -> None:
    """Until HAProxy has sent requests to every gateway (its checks mark one up after two
    successes: a gateway that started after HAProxy is down for a moment)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while len(seen) < gateways and time.monotonic() < deadline:
            async with session.get(url + "/health") as r:
                seen.add(r.headers.get("X-Deepfleet-Gateway", ""))
            await asyncio.sleep(0.05)
    assert len(seen) == gateways, f"HAProxy routed only to {sorted(seen)}"


async def drive(url: str, streams: int, victim_pid: int, victim: str, report: Report) -> None:
    await all_up(url, report.gateways)
    sig = signal.Signals[report.signal]
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=conn) as session:
        running = [asyncio.ensure_future(one(session, url)) for _ in range(streams)]
        await asyncio.sleep(2.0)  # every stream under way (5 s each)
        os.kill(victim_pid, sig)
        killed = time.monotonic()
        fresh: list[asyncio.Future[Outcome]] = []
        while time.monotonic() - killed < 2.0:  # new requests in the 2 s after the kill
            fresh.append(asyncio.ensure_future(one(session, url)))
            await asyncio.sleep(0.1)
        old, new = await asyncio.gather(*running), await asyncio.gather(*fresh)
    report.victim = victim
    report.carried_by_victim = sum(o.gateway == victim for o in old)
    report.failed = sum(not o.ok for o in old)
    report.failed_on_victim = sum(not o.ok and o.gateway == victim for o in old)
    report.failed_elsewhere = sum(not o.ok and o.gateway != victim for o in old)
    report.hangs = sum(o.hung for o in [*old, *new])
    report.new_requests, report.new_ok = len(new), sum(o.ok for o in new)
    oks = [o.first_byte - killed for o in new if o.ok and o.first_byte]
    report.first_new_ok_after_kill_s = round(min(oks), 3) if oks else None
    ttfb = [o.first_byte - o.started for o in new if o.first_byte]
    report.new_ttfb_max_s = round(max(ttfb), 3) if ttfb else None
    report.errors = sorted({o.error for o in [*old, *new] if o.error})[:10]


def free_block(n: int) -> int:
    """A port whose next `n` ports are free too (HAProxy's, then the gateways')."""
    while True:
        port = free_port()
        if port + n < 65536 and not any(port_in_use("127.0.0.1", port + i) for i in range(n + 1)):
            return port


def run(state_dir: Path, streams: int = 32, gateways: int = 3, sig: str = "SIGKILL") -> Report:
    """Start the fleet (controller helper, 2 fake engines, `gateways` behind HAProxy), run
    the scenario against gateway-1 with `sig`, stop everything."""
    port = free_block(gateways)
    log = (state_dir / "controller.log").open("ab")
    ctl = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.adopt_controller", str(state_dir), str(port),
         "2", "a", str(gateways), "100"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    report = Report(streams, gateways, sig)
    try:
        state = readiness.wait_ready(state_dir, 90, process=ctl)
        victim = next(s for s in state.services if s.replica_id == "gateway-1")
        assert victim.pid is not None
        asyncio.run(drive(state.gateway_url, streams, victim.pid, victim.replica_id, report))
        report.load_avg_1m = os.getloadavg()[0]
    finally:
        down(state_dir, timeout_s=20)
    return report
