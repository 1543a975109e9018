"""The faults the chaos benchmark injects, each on its own schedule `KIND:SECONDS[:ARG]`.

- `kill:S`: every S seconds SIGKILL a random ready engine. Its streams migrate (reason
  `disconnect`), its supervisor restarts it.
- `stop:S:HOLD`: every S seconds SIGSTOP a random ready engine's process group for HOLD
  seconds (default 30), then SIGCONT. The engine's sockets stay open, so the gateway sees
  only silence: its streams migrate once the stall deadline (`gateway.stall_timeout_s`,
  `--stall-timeout`) passes, which must be shorter than HOLD; otherwise they only wait.
- `gwkill:S`: every S seconds SIGKILL one gateway worker process (`--gateway-workers` 2 or
  more). No gateway can migrate its own death: the streams that worker held fail at the
  client. They are told apart from other failures by their connection: the killed worker's
  sockets are read just before the kill, and each request notes its client port
  (run.PortConnector). uvicorn's supervisor (the gateway's main process) must start a new
  worker; the time it took, or its absence, is reported.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

# A uvicorn worker of a gateway with `workers > 1`: a multiprocessing child of its main
# process (its other child is multiprocessing's resource tracker).
WORKER_MARK = "spawn_main"
RESTART_WAIT_S = 30.0


@dataclass
class WorkerKill:
    at: str
    pid: int
    client_ports: set[int]
    """The client ports of the connections the worker held when it was killed."""
    replaced_by: int | None = None
    restart_s: float | None = None


@dataclass
class FaultLog:
    lines: list[str] = field(default_factory=list)
    worker_kills: list[WorkerKill] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} {what}")

    def killed_worker_held(self, port: int | None) -> bool:
        return port is not None and any(port in k.client_ports for k in self.worker_kills)


State = Callable[[], dict[str, object]]


async def inject(spec: str, until: float, state: State, log: FaultLog) -> None:
    """Run one fault schedule until the monotonic time `until`: a fault every `S` seconds
    from the start (at S, 2S, ... before `until`), however long each took to inject. `state`
    reads the fleet's state file in-process: with a `deepfleet status --json` subprocess
    per fault (1-2 s here), CI's loaded box once fired no fault in a 60 s run (stop 27)."""
    kind, every, *rest = spec.split(":")
    if kind not in ("kill", "stop", "gwkill"):
        raise SystemExit(f"unknown fault {spec!r}: kill:S, stop:S:HOLD or gwkill:S")
    start = time.monotonic()
    due = start + float(every)
    while due < until:
        try:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        except asyncio.CancelledError:  # the load ended first: say so, a run must not look calm
            log.note(f"{spec}: the fault due {due - start:.0f}s in never fired")
            raise
        late = time.monotonic() - due
        if late > 2.0:
            log.note(f"{spec}: fired {late:.1f}s late (the event loop was busy)")
        due += float(every)
        current = state()
        if kind == "gwkill":
            await kill_worker(current, log)
            continue
        replicas = current["replicas"]
        assert isinstance(replicas, list)
        ready = [r for r in replicas if r["state"] == "ready" and r.get("pid")]
        if not ready:
            log.note(f"{kind}: no ready engine")
            continue
        victim = random.choice(ready)
        pid = int(victim["pid"])
        log.note(f"{kind} {victim['id']}")
        try:
            if kind == "kill":
                os.kill(pid, signal.SIGKILL)
            else:
                resumed = await hold_stopped(pid, float(rest[0]) if rest else 30.0)
                log.note(f"cont {victim['id']}" if resumed else f"{victim['id']} was killed "
                         "while stopped (its supervisor restarts an engine that fails its "
                         "health checks)")  # fmt: skip
        except ProcessLookupError:
            log.note(f"{victim['id']} had exited before the {kind}")


async def hold_stopped(pid: int, seconds: float) -> bool:
    """SIGSTOP the engine (its whole process group: vLLM's API server and engine core) for
    `seconds`, then SIGCONT it, also when cancelled. False when it was gone by then."""
    send = os.killpg if os.getpgid(pid) == pid else os.kill
    send(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        resumed = _resume(send, pid)
    return resumed


def _resume(send: Callable[[int, int], None], pid: int) -> bool:
    try:
        send(pid, signal.SIGCONT)
    except ProcessLookupError:
        return False
    return True


def gateway_workers(gateway_pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(gateway_pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for child in children:
        try:
            if any(WORKER_MARK in part for part in child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


async def kill_worker(current: dict[str, object], log: FaultLog) -> None:
    """SIGKILL a random gateway worker, then wait for its supervisor to start another."""
    gateway = current.get("gateway")
    assert isinstance(gateway, dict)
    gateway_pid = int(gateway["pid"])
    port = int(str(current["gateway_url"]).rsplit(":", 1)[1])
    workers = gateway_workers(gateway_pid)
    if len(workers) < 2:
        log.note(f"gwkill: {len(workers)} gateway worker(s); needs --gateway-workers 2 or more")
        return
    victim = random.choice(workers)
    ports = {
        c.raddr.port for c in victim.net_connections(kind="tcp") if c.raddr and c.laddr.port == port
    }
    victim.kill()
    kill = WorkerKill(time.strftime("%H:%M:%S"), victim.pid, ports)
    log.worker_kills.append(kill)
    log.note(f"gwkill worker {victim.pid} holding {len(ports)} client connection(s)")
    before = {w.pid for w in workers}
    started = time.monotonic()
    while time.monotonic() - started < RESTART_WAIT_S:
        await asyncio.sleep(0.2)
        new = [w.pid for w in gateway_workers(gateway_pid) if w.pid not in before]
        if new:
            kill.replaced_by, kill.restart_s = new[0], round(time.monotonic() - started, 2)
            log.note(f"gateway worker {new[0]} replaced {victim.pid} after {kill.restart_s}s")
            return
    log.note(f"gateway worker {victim.pid} was not replaced within {RESTART_WAIT_S:.0f}s")
