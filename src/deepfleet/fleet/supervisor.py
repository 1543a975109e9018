"""Supervise one process: start it, wait until healthy, watch it, restart it with backoff.

Used for every engine replica and for the gateway. The process, the health probe and the
clock are injected, so the restart logic is tested without real engines. A supervisor may
start by adopting a process a dead controller left running (`adopt`): it watches that one
first, and starts its own only once it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.process import (
    ADOPTED_EXIT,
    AdoptedProcess,
    ManagedProcess,
    SupervisedProcess,
    pid_start_time,
)
from deepfleet.fleet.state import ReplicaState, ReplicaStatus

log = logging.getLogger(__name__)

Probe = Callable[[str], Awaitable[bool]]
Spawner = Callable[[LaunchSpec, Path], SupervisedProcess]


@dataclass(frozen=True)
class SupervisorPolicy:
    startup_timeout_s: float = 900.0
    health_interval_s: float = 1.0
    unhealthy_after: int = 3  # consecutive failed probes before a restart
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    stable_after_s: float = 60.0  # ready this long resets the backoff
    stop_grace_s: float = 15.0


class Supervisor:
    def __init__(
        self,
        status: ReplicaStatus,
        spec: LaunchSpec,
        health_url: str,
        *,
        probe: Probe,
        on_change: Callable[[], None],
        policy: SupervisorPolicy = SupervisorPolicy(),
        spawn: Spawner = ManagedProcess,
    ) -> None:
        self.status = status
        self.spec = spec
        self.health_url = health_url
        self._probe = probe
        self._on_change = on_change
        self._policy = policy
        self._spawn = spawn
        self._stop = asyncio.Event()
        self._proc: SupervisedProcess | None = None
        self._adopted: AdoptedProcess | None = None

    def adopt(self, old: ReplicaStatus) -> None:
        """Begin with the process `old` describes (checked by pid and start time when run()
        starts) instead of starting one; its counters and times carry over."""
        assert old.pid is not None
        self._adopted = AdoptedProcess(old.pid, old.pid_start)
        # Its state too: the gateway keeps routing to a ready engine while this controller
        # starts, instead of seeing it `starting` until the first probe.
        kept = ("state", "pid", "pid_start", "started_at", "ready_at", "restarts", "last_exit",
                "generation")  # fmt: skip
        for name in kept:
            setattr(self.status, name, getattr(old, name))

    def _set(self, state: ReplicaState, **fields: object) -> None:
        self.status.state = state
        for k, v in fields.items():
            setattr(self.status, k, v)
        # Publishing is best-effort: a failing listener (a full disk) must not stop the
        # supervision, nor the kill in stop().
        try:
            self._on_change()
        except Exception:
            log.exception("publishing %s's state failed", self.status.replica_id)

    async def run(self) -> None:
        """Keep the process up until stop() is called."""
        backoff = self._policy.backoff_initial_s
        log = Path(self.status.log) if self.status.log else Path(f"{self.status.replica_id}.log")
        while not self._stop.is_set():
            adopted, self._adopted = self._adopted, None
            proc = adopted or self._spawn(self.spec, log)
            self._proc = proc
            try:
                await proc.start()
            except OSError as exc:
                reason = f"could not start: {exc}"
            else:
                if adopted is None:
                    self._set(
                        ReplicaState.STARTING,
                        pid=proc.pid,
                        pid_start=pid_start_time(proc.pid),
                        started_at=time.time(),
                        ready_at=None,
                    )
                exited = asyncio.ensure_future(proc.wait())
                failed = await self._wait_ready(exited)
                if failed is not None:
                    reason = failed
                else:
                    kept = self.status.ready_at if adopted else None
                    ready_at = time.time()
                    self._set(ReplicaState.READY, ready_at=kept or ready_at)
                    reason = await self._watch(exited)
                    if time.time() - ready_at >= self._policy.stable_after_s:
                        backoff = self._policy.backoff_initial_s
                # Also when it exited by itself: its workers may still hold the group.
                await proc.stop(self._policy.stop_grace_s)
                exited.cancel()
            if self._stop.is_set():
                break
            self._set(
                ReplicaState.RESTARTING,
                last_exit=reason,
                pid=None,
                pid_start=None,
                restarts=self.status.restarts + 1,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, self._policy.backoff_max_s)
        self._set(ReplicaState.STOPPED, pid=None, pid_start=None)

    async def _wait_ready(self, exited: asyncio.Future[int]) -> str | None:
        """None when healthy; otherwise why it never became healthy."""
        deadline = time.monotonic() + self._policy.startup_timeout_s
        while not self._stop.is_set():
            if exited.done():
                return f"{_exit_reason(exited.result())} during startup"
            if await self._probe(self.health_url):
                return None
            if time.monotonic() > deadline:
                return f"not healthy after {self._policy.startup_timeout_s:.0f}s"
            await self._sleep_or_exit(exited, 0.5)
        return "stopped"

    async def _watch(self, exited: asyncio.Future[int]) -> str:
        failures = 0
        while not self._stop.is_set():
            await self._sleep_or_exit(exited, self._policy.health_interval_s)
            if exited.done():
                return _exit_reason(exited.result())
            if self._stop.is_set():
                break
            if await self._probe(self.health_url):
                if failures:
                    failures = 0
                    self._set(ReplicaState.READY)
                continue
            failures += 1
            if failures == 1:
                self._set(ReplicaState.UNHEALTHY)
            if failures >= self._policy.unhealthy_after:
                return f"health check failed {failures} times"
        return "stopped"

    async def _sleep_or_exit(self, exited: asyncio.Future[int], seconds: float) -> None:
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {exited, stop}
        try:
            await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def stop(self) -> None:
        """Stop supervising and stop the process (SIGTERM, then SIGKILL after the grace)."""
        self._stop.set()
        if self._proc is not None and self._proc.returncode is None:
            try:
                self._set(ReplicaState.STOPPING)
            finally:
                await self._proc.stop(self._policy.stop_grace_s)


def _exit_reason(code: int) -> str:
    if code == ADOPTED_EXIT:
        return "exited (an adopted process: its exit status is unknown)"
    return f"exited with code {code}" if code >= 0 else f"killed by signal {-code}"
