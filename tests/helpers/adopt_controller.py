"""A controller process over fake engines, as `deepfleet up` runs one, to SIGKILL in tests:
python -m tests.helpers.adopt_controller STATE_DIR GATEWAY_PORT [REPLICAS [TAG [INSTANCES
[TOKENS]]]].

It takes the state dir's lock and adopts what the state dir's last controller left running,
as lifecycle.up does; its replicas run tests.helpers.fake_engine_main (fake_fleet), TOKENS
tokens 50 ms apart; `gateway.instances: INSTANCES` puts that many gateways behind HAProxy."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from deepfleet.config import FleetConfig
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.front import front_services
from deepfleet.fleet.lifecycle import fleet_lock, serve
from deepfleet.fleet.state import STATE_FILE, read_state
from deepfleet.fleet.supervisor import SupervisorPolicy
from tests.helpers.fake_fleet import FakeEngineLauncher

FAST = SupervisorPolicy(startup_timeout_s=30, health_interval_s=0.2, stop_grace_s=3)


def main(state_dir: Path, port: int, replicas: int, tag: str, instances: int, tokens: int) -> None:
    model = {"name": "tiny", "replicas": replicas, "engine_args": {"tag": tag}}
    gateway = {"port": port, "instances": instances, "drain_grace_s": 10}  # > a 5 s stream
    cfg = FleetConfig.model_validate({"models": [model], "gateway": gateway})
    with fleet_lock(state_dir):
        launcher = FakeEngineLauncher(tokens=tokens)
        previous = read_state(state_dir / STATE_FILE)
        controller = Controller(cfg, state_dir, launcher.plans(cfg, {}), policy=FAST,
                                services=front_services(cfg, state_dir),
                                launcher=launcher, previous=previous)  # fmt: skip
        asyncio.run(serve(controller))


if __name__ == "__main__":
    a = [*sys.argv[1:], "", "", "", "", ""]
    main(Path(a[0]), int(a[1]), int(a[2] or 2), a[3] or "a", int(a[4] or 1), int(a[5] or 20))
