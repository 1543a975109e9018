"""Simulated engines with KV events and the fleet state a gateway would read, for tests."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from deepfleet.catalog import bundled
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state
from deepfleet.routing import RouteRequest
from deepfleet.routing.feeds import RoutingFeeds
from deepfleet.sim.build import SimSpec, build
from deepfleet.sim.engine import ScaledClock
from deepfleet.sim.server import RunningEngine, serve_engines
from deepfleet.sim.tokenizer import load_tokenizer

MODEL = "m"
BLOCK = 16


def tokenizer_folder() -> Path:
    return bundled.default_target()


@dataclass
class SimFleet:
    engines: list[RunningEngine]
    ports: list[int]
    state_path: Path
    routing: str
    restarts: list[int]

    def publish(self) -> None:
        state = FleetState(
            controller_pid=1,
            gateway_url="",
            models=[ModelRoute(MODEL, self.routing, 4096, str(tokenizer_folder()), BLOCK)],
        )
        for i, (item, port) in enumerate(zip(self.engines, self.ports, strict=True)):
            state.replicas.append(
                ReplicaStatus(
                    f"{MODEL}-{i}", MODEL, "vllm", item.url, ReplicaState.READY,
                    restarts=self.restarts[i], kv_events_port=port,
                )
            )  # fmt: skip
        write_state(self.state_path, state)


@contextlib.asynccontextmanager
async def sim_fleet(
    tmp: Path,
    count: int = 2,
    routing: str = "kv_aware",
    kv_tokens: int = 8192,
    max_num_seqs: int = 256,
    speed: float = 10.0,
) -> AsyncIterator[SimFleet]:
    config, profile, _ = build(SimSpec(str(tokenizer_folder()), "H200"))
    config = dataclasses.replace(
        config, model=MODEL, block_size=BLOCK, kv_tokens=kv_tokens, max_num_seqs=max_num_seqs
    )
    tokenizer = load_tokenizer(str(tokenizer_folder()))
    async with contextlib.AsyncExitStack() as stack:
        engines, ports = [], []
        for _ in range(count):
            port = free_port()
            running = await stack.enter_async_context(
                serve_engines(
                    config, profile, tokenizer, port=0, kv_events=f"tcp://127.0.0.1:{port}",
                    clock=ScaledClock(speed),
                )
            )  # fmt: skip
            engines.extend(running)
            ports.append(port)
        fleet = SimFleet(engines, ports, tmp / "fleet.json", routing, [0] * count)
        fleet.publish()
        yield fleet


async def chat(session: aiohttp.ClientSession, url: str, body: bytes) -> dict[str, object]:
    async with session.post(
        url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 200, await response.text()
        data: dict[str, object] = await response.json()
        return data


async def route_and_send(
    feeds: RoutingFeeds, session: aiohttp.ClientSession, fleet: SimFleet, body: bytes
) -> tuple[str, RouteRequest]:
    """What the gateway does for one request: prepare, decide, send to the first endpoint."""
    route = await feeds.router.request(MODEL, "/v1/chat/completions", body)
    first = feeds.router.decide(route).order[0]
    await chat(session, first.url, body)
    return first.replica_id, route
