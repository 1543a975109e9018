"""Finding 11: the state dir was 0755 and gateway.json, holding the metrics token, 0644 (the
docs promise 0600). The state dir and everything the controller writes in it are private."""

from __future__ import annotations

import stat
from pathlib import Path

from deepfleet.config import FleetConfig
from deepfleet.config.kvcache import KV_ROUTING_FILE
from deepfleet.fleet.controller import GATEWAY_SETTINGS, Controller
from deepfleet.fleet.state import STATE_FILE


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_other_users_cannot_read_the_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    cfg = FleetConfig.model_validate(
        {"models": [{"name": "m"}], "gateway": {"metrics_token": "s3cret-token"}}
    )
    controller = Controller(cfg, state_dir, [])  # writes gateway.json for its gateway
    controller.publish()
    assert _mode(state_dir) == 0o700
    assert _mode(state_dir / "logs") == 0o700
    for name in (STATE_FILE, GATEWAY_SETTINGS, KV_ROUTING_FILE, "logs/gateway.log"):
        assert _mode(state_dir / name) == 0o600, name
