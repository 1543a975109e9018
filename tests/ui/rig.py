"""An R1-style fleet without a GPU: the simulator (reasoning parser on) listed as a READY replica
in a fleet state, the real gateway routing from it, and Open-WebUI started from the Service that
`ui_service` builds, exactly as `deepfleet up --ui` would start it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deepfleet.config.schema import FleetConfig, GatewaySpec, ModelSpec
from deepfleet.config.ui import UiSpec
from deepfleet.fleet.controller import Service, keys_db_path
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state
from deepfleet.ui import ui_service
from tests.e2e.conftest import DEEPFLEET
from tests.helpers.processes import ROOT, stop, wait_http

R1_MODEL = "DeepSeek-R1-Distill-Qwen-1.5B"
R1_SOURCE = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


@dataclass(frozen=True)
class SimUiRig:
    ui_url: str
    gateway_url: str
    service: Service


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=cwd or ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


@contextmanager
def r1_sim_with_ui(tmp: Path, speed: float = 0.1) -> Iterator[SimUiRig]:
    """Simulated R1 distill (on a simulated H200, slowed by `speed` so the thinking streams
    visibly) -> gateway -> Open-WebUI in single-user mode. Everything is stopped at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        sim = ["--model", R1_SOURCE, "--gpu", "H200", "--port", str(sim_port)]
        sim += ["--speed", str(speed), "--served-model-name", R1_MODEL, "--reasoning-parser"]
        procs.append(_spawn([*DEEPFLEET, "sim", *sim], tmp / "sim.log"))
        cfg = FleetConfig(
            models=[ModelSpec(name=R1_MODEL, source=R1_SOURCE, engine="vllm")],
            ui=UiSpec(enabled=True, port=free_port(), single_user=True),
        )
        state = FleetState(
            controller_pid=os.getpid(),
            gateway_url="",
            models=[ModelRoute(R1_MODEL, "round_robin", 16384)],
            replicas=[ReplicaStatus(f"{R1_MODEL}-0", R1_MODEL, "sim", sim_url, ReplicaState.READY)],
        )
        write_state(tmp / "fleet.json", state)
        settings = tmp / "gateway.json"
        settings.write_text(GatewaySpec(keys_db=keys_db_path(cfg, tmp)).model_dump_json())
        gw_port = free_port()
        gateway_url = f"http://127.0.0.1:{gw_port}"
        # Built before the gateway starts, as in `deepfleet up`: it creates the UI's key.
        service = ui_service(cfg, tmp, gateway_url)
        gateway = [sys.executable, "-m", "deepfleet.gateway", "--port", str(gw_port)]
        gateway += ["--state-file", str(tmp / "fleet.json"), "--settings", str(settings)]
        procs.append(_spawn(gateway, tmp / "gateway.log"))
        procs.append(
            _spawn(service.spec.argv, tmp / "open-webui.log", service.spec.env, service.spec.cwd)
        )
        for url in (sim_url + "/health", gateway_url + "/health"):
            wait_http(url, timeout=60)
        wait_http(service.health_url, timeout=180)
        yield SimUiRig(service.status.url, gateway_url, service)
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
