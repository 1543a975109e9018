"""A child process in its own session, logging to a file, stoppable as a whole group.

Engines spawn workers of their own (vLLM's engine core, its CPU workers); starting each engine
in a new session lets one killpg reach all of them, so nothing is left behind. `signal_group`
is the one way deepfleet signals such a tree: the supervisor's stop and `deepfleet down` (for
groups a dead controller left behind) both use it. A group is named by its leader's pid, so
it is reached even when the leader is gone and its children were re-parented.

A pid alone does not name a process for long: after a crash or a reboot, fleet.json may name
pids the kernel has since given to other programs. So each pid is recorded with its start time
(`pid_start_time`, field 22 of /proc/<pid>/stat: clock ticks after boot), and `same_process`
checks both before anything is signalled.

A controller that died leaves its engines running (each is in a session of its own): the next
controller adopts them (deepfleet.fleet.adopt) as `AdoptedProcess`es. Those are not its
children, so it cannot wait() for them: it polls `same_process` instead, and learns that one
exited, never how.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from pathlib import Path
from typing import Protocol

from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.environ import child_environ


def pid_alive(pid: int | None) -> bool:
    """True while `pid` runs (a zombie counts as gone: it only waits to be reaped)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def pid_start_time(pid: int | None) -> int | None:
    """When `pid` started (clock ticks after boot), or None when it is gone or unreadable."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int | None, started: int | None) -> bool:
    """True when `pid` runs and is the process recorded with start time `started`. A pid
    recorded without a start time cannot be told from a stranger: False."""
    return started is not None and pid_alive(pid) and pid_start_time(pid) == started


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to every process of the group `pgid`; a group that is gone is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class SupervisedProcess(Protocol):
    """What a supervisor needs of a process: a child it started, or one it adopted."""

    @property
    def pid(self) -> int | None: ...

    @property
    def returncode(self) -> int | None: ...

    async def start(self) -> None: ...

    async def wait(self) -> int: ...

    async def stop(self, grace_s: float = 15.0) -> int | None: ...


ADOPTED_EXIT = -255
"""What AdoptedProcess.wait() returns: the process is gone, its exit status is unknowable."""


class AdoptedProcess:
    """A running process group another controller started (pid + start time, checked), as
    a SupervisedProcess: start() does nothing, wait() polls until it is gone."""

    def __init__(self, pid: int, started: int | None, poll_s: float = 0.25) -> None:
        self._pid = pid
        self._started = started
        self._poll_s = poll_s
        self._code: int | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def returncode(self) -> int | None:
        if self._code is None and not same_process(self._pid, self._started):
            self._code = ADOPTED_EXIT
        return self._code

    async def start(self) -> None:
        if not same_process(self._pid, self._started):
            raise OSError(f"adopted process {self._pid} is gone")

    async def wait(self) -> int:
        # Polling is the only way: the kernel tells only a parent when its child exits.
        while self.returncode is None:  # noqa: ASYNC110
            await asyncio.sleep(self._poll_s)
        return ADOPTED_EXIT

    async def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM the group, SIGKILL it after `grace_s`; only while it is still ours."""
        if self.returncode is None:
            signal_group(self._pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.returncode is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(self._poll_s)
            if self.returncode is None:
                signal_group(self._pid, signal.SIGKILL)
                await self.wait()
        # Workers that outlived the leader keep the group's number: it still names them.
        signal_group(self._pid, signal.SIGKILL)
        return self._code


class ManagedProcess:
    def __init__(self, spec: LaunchSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = child_environ(self.spec.env)  # an allowlist: no secrets of the controller
        cpus = self.spec.cpus
        # Set in the child before exec, so its first thread already runs on them.
        pin = None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus)
        on = "" if cpus is None else f" (CPUs {','.join(map(str, cpus))})"
        with self.log_path.open("ab") as log:
            log.write(
                f"\n=== {time.strftime('%F %T')} start: {' '.join(self.spec.argv)}{on}\n".encode()
            )
            log.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self.spec.cwd,
                start_new_session=True,
                preexec_fn=pin,
            )

    async def wait(self) -> int:
        assert self._proc is not None, "wait() before start()"
        return await self._proc.wait()

    def signal_group(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            signal_group(self._proc.pid, sig)

    async def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM the group, then SIGKILL it after `grace_s`; returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.returncode is None:
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), grace_s)
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
                await self._proc.wait()
        # Children that outlived their parent (same process group) are killed too.
        self.signal_group(signal.SIGKILL)
        return self._proc.returncode
