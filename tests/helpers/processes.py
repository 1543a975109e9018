"""Start real gateway and fake-engine processes for tests, and stop them completely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from deepfleet.config.schema import GatewaySpec
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state

ROOT = Path(__file__).parents[2]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not up in {timeout}s")


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    try:
        os.killpg(proc.pid, sig)
        return proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(5)


@dataclass
class GatewayRig:
    url: str
    engines: list[str]
    state_dir: Path
    gateway: subprocess.Popen[bytes]


@contextmanager
def gateway_with_fake_engines(
    tmp: Path,
    model: str,
    engines: int = 2,
    spec: GatewaySpec | None = None,
    max_model_len: int | None = 4096,
    engine_args: tuple[str, ...] = (),
) -> Iterator[GatewayRig]:
    """A real `python -m deepfleet.gateway` in front of fake engine processes."""
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i in range(engines):
            port = free_port()
            procs.append(
                spawn(
                    [
                        sys.executable,
                        "-m",
                        "tests.helpers.fake_engine_main",
                        str(port),
                        f"e{i}",
                        *engine_args,
                    ],
                    tmp / f"engine{i}.log",
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        state = FleetState(
            controller_pid=os.getpid(),
            gateway_url="",
            models=[ModelRoute(model, "round_robin", max_model_len)],
        )
        for i, url in enumerate(urls):
            state.replicas.append(
                ReplicaStatus(f"{model}-{i}", model, "fake", url, ReplicaState.READY)
            )
        write_state(tmp / "fleet.json", state)
        settings = tmp / "gateway.json"
        settings.write_text((spec or GatewaySpec()).model_dump_json())
        port = free_port()
        gw = spawn(
            [
                sys.executable,
                "-m",
                "deepfleet.gateway",
                "--state-file",
                str(tmp / "fleet.json"),
                "--settings",
                str(settings),
                "--port",
                str(port),
            ],
            tmp / "gateway.log",
        )
        procs.append(gw)
        for url in [*urls, f"http://127.0.0.1:{port}"]:
            wait_http(url + "/health")
        yield GatewayRig(f"http://127.0.0.1:{port}", urls, tmp, gw)
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
