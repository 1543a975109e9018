"""Run an engine that dies with its supervisor actor.

`python -m deepfleet.fleet.ray.guard WATCH_PID -- ARGV...` starts ARGV in the guard's own
process group (the supervisor starts the guard in a new session) and waits for it. When
WATCH_PID (the Ray worker that hosts the supervisor actor) is gone, because Ray killed the
actor, its raylet died or the node is going down, the guard SIGKILLs the whole group, so no
engine outlives the actor that owns its placement. SIGTERM and SIGINT reach the engine
through the group; the guard only waits for it and exits the way it exited.

The actor is detached (fleet.ray.survivors), so its worker, and with it the engine, outlives
the controller's Ray job: a controller that dies is not a reason to kill the engine, and the
guard does not watch it. Only the worker's end is (`ray.kill` from a controller or `deepfleet
down`, the node's death).

Ray kills a dead worker's child processes, which is the guard itself. So a forked watcher in
the group asks the kernel (PR_SET_PDEATHSIG) to be told when the guard dies, however it dies,
and then SIGKILLs the group: the engine and every process it started.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

from deepfleet.fleet.process import pid_alive

POLL_S = 0.5
PR_SET_PDEATHSIG = 1
WATCHER_SIGNAL = signal.SIGUSR2


def watch_guard(guard: int) -> None:
    """In a forked child: wait for the guard's death, then kill the whole group."""
    group = os.getpgid(0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the group's final SIGKILL ends the watcher
    signal.signal(WATCHER_SIGNAL, lambda *_: os.killpg(group, signal.SIGKILL))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, WATCHER_SIGNAL, 0, 0, 0)
    if os.getppid() != guard:  # the guard died before the kernel was asked
        os.killpg(group, signal.SIGKILL)
    while True:
        signal.pause()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m deepfleet.fleet.ray.guard WATCH_PID -- ARGV...", file=sys.stderr)
        return 2
    watch = int(argv[0])
    guard = os.getpid()
    if os.fork() == 0:
        watch_guard(guard)
    child = subprocess.Popen(argv[2:])
    # The group gets the signal; the guard stays to reap the engine and report its exit.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    while True:
        try:
            code = child.wait(POLL_S)
        except subprocess.TimeoutExpired:
            if pid_alive(watch):
                continue
            print(f"guard: supervisor {watch} is gone; killing the engine", file=sys.stderr)
            os.killpg(os.getpgid(0), signal.SIGKILL)
            return 137  # not reached: the group includes the guard
        if code < 0:
            if -code != signal.SIGKILL:
                signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
            time.sleep(1)
        return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
