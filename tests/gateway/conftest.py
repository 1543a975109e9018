from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
import uvicorn

from deepfleet.config.kvcache import KvRoutingSpec
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state
from deepfleet.gateway.app import Gateway
from deepfleet.gateway.keys import KeyStore
from deepfleet.gateway.limits import TokenBuckets
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.server import HTTP_PROTOCOL
from deepfleet.gateway.settings import GatewaySettings
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds
from tests.helpers.fake_engine import FakeEngine

MODEL = "tiny"


@dataclass
class Rig:
    url: str
    engines: list[FakeEngine]
    state_path: Path
    gateway: Gateway
    keys: KeyStore
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    def publish(
        self,
        ready: list[bool] | None = None,
        down: ReplicaState = ReplicaState.RESTARTING,
        queue_timeout_s: float | None = None,
    ) -> None:
        """Replicas ready or `down`; a model's `queue_timeout_s` (None: the default)."""
        ready = ready or [True] * len(self.engines)
        route = ModelRoute(MODEL, "round_robin", queue_timeout_s=queue_timeout_s)
        state = FleetState(controller_pid=1, gateway_url=self.url, models=[route])
        for i, (e, ok) in enumerate(zip(self.engines, ready, strict=True)):
            state.replicas.append(
                ReplicaStatus(
                    replica_id=f"{MODEL}-{i}",
                    model=MODEL,
                    engine="fake",
                    url=e.url,
                    state=ReplicaState.READY if ok else down,
                )
            )
        write_state(self.state_path, state)
        self.gateway.table.refresh()


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """A gateway on a real socket in front of two fake engines; indirect params override
    GatewaySettings fields."""
    fakes = [FakeEngine(f"e{i}") for i in range(2)]
    for f in fakes:
        await f.start()
    state_path = tmp_path / "fleet.json"
    settings = GatewaySettings(read_timeout_s=5, **getattr(request, "param", {}))
    keys = KeyStore(tmp_path / "keys.db")
    metrics = GatewayMetrics()
    table = EndpointTable(state_path)
    gateway = Gateway(
        table,
        KeyStore(tmp_path / "keys.db"),
        TokenBuckets(tmp_path / "usage.db"),
        settings,
        metrics,
        RoutingFeeds(table, KvRoutingSpec().model_dump(), registry=metrics.registry),
    )
    port = free_port()
    rig = Rig(f"http://127.0.0.1:{port}", fakes, state_path, gateway, keys)
    rig.publish()
    config = uvicorn.Config(
        gateway.app(), host="127.0.0.1", port=port, log_level="warning", http=HTTP_PROTOCOL
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    yield rig
    for c in rig.clients:
        await c.close()
    server.should_exit = True
    await task
    for f in fakes:
        await f.stop()
