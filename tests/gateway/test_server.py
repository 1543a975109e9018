"""The gateway process: what `create_app` (uvicorn's factory, once per worker) leaves behind."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from deepfleet.fleet.state import FleetState, ModelRoute, write_state
from deepfleet.gateway import server
from deepfleet.gateway.asgi import GatewayASGI


def test_create_app_freezes_the_startup_heap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "fleet.json"
    write_state(
        state, FleetState(controller_pid=1, gateway_url="", models=[ModelRoute("m", "round_robin")])
    )
    monkeypatch.setenv(server.STATE_ENV, str(state))
    monkeypatch.delenv(server.SETTINGS_ENV, raising=False)
    gc.unfreeze()
    try:
        app = server.create_app()
        assert isinstance(app, GatewayASGI)
        # The app and everything imported so far: out of the cyclic GC's full collections.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
