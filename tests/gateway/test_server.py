"""The gateway process: the settings each worker is handed, and what `create_app` (the app
factory, once per worker) leaves behind."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path

from deepfleet.config.schema import AdmissionSpec, GatewaySpec
from deepfleet.fleet.state import FleetState, ModelRoute, write_state
from deepfleet.gateway import server
from deepfleet.gateway.asgi import GatewayASGI
from deepfleet.gateway.settings import GatewaySettings, WorkerSettings


def fleet_state(tmp_path: Path) -> Path:
    state = tmp_path / "fleet.json"
    write_state(
        state, FleetState(controller_pid=1, gateway_url="", models=[ModelRoute("m", "round_robin")])
    )
    return state


def test_worker_settings_come_from_the_spec(tmp_path: Path) -> None:
    state = tmp_path / "fleet.json"
    spec = GatewaySpec(
        metrics_token="t",
        max_body_bytes=4096,
        read_timeout_s=7,
        reasoning_cap=99,
        admission=AdmissionSpec(max_in_flight=3, max_queue=4, queue_timeout_s=5),
    )
    settings = server.worker_settings(spec, state)
    assert settings == WorkerSettings(
        state_file=state,
        keys_db=tmp_path / "keys.db",
        usage_db=tmp_path / "keys-usage.db",
        gateway=GatewaySettings(
            max_body_bytes=4096,
            read_timeout_s=7,
            metrics_token="t",
            reasoning_cap=99,
            max_in_flight=3,
            max_queue=4,
            queue_timeout_s=5,
        ),
    )
    named = server.worker_settings(GatewaySpec(keys_db=tmp_path / "k" / "mine.db"), state)
    assert (named.keys_db, named.usage_db) == (
        tmp_path / "k" / "mine.db",
        tmp_path / "k" / "mine-usage.db",
    )


def test_a_worker_builds_its_app_from_the_pickled_config(tmp_path: Path) -> None:
    """What a spawned worker does: unpickle uvicorn's Config, call the factory it holds."""
    settings = server.worker_settings(GatewaySpec(), fleet_state(tmp_path))
    config = server.uvicorn_config(settings, "127.0.0.1", 0, 2, "warning", GatewaySpec())
    worker = pickle.loads(pickle.dumps(config))
    gc.unfreeze()
    try:
        worker.load()
        assert isinstance(worker.loaded_app, GatewayASGI)
    finally:
        gc.unfreeze()


def test_create_app_freezes_the_startup_heap(tmp_path: Path) -> None:
    settings = server.worker_settings(GatewaySpec(), fleet_state(tmp_path))
    gc.unfreeze()
    try:
        app = server.create_app(settings)
        assert isinstance(app, GatewayASGI)
        # The app and everything imported so far: out of the cyclic GC's full collections.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
