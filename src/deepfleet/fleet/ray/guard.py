"""Run an engine that dies with its supervisor actor.

`python -m deepfleet.fleet.ray.guard WATCH_PID -- ARGV...` starts ARGV in the guard's own
process group (the supervisor starts the guard in a new session) and waits for it. When
WATCH_PID (the Ray worker that hosts the supervisor actor) is gone, because Ray killed the
actor, its raylet died or the node is going down, the guard SIGKILLs the whole group, so no
engine outlives the actor that owns its placement. SIGTERM and SIGINT reach the engine
through the group; the guard only waits for it and exits the way it exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m deepfleet.fleet.ray.guard WATCH_PID -- ARGV...", file=sys.stderr)
        return 2
    watch = int(argv[0])
    child = subprocess.Popen(argv[2:])
    # The group gets the signal; the guard stays to reap the engine and report its exit.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    while True:
        try:
            code = child.wait(POLL_S)
        except subprocess.TimeoutExpired:
            if alive(watch):
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
