"""A fleet of fake engines for controller tests (apply, autoscaling): a launcher whose replicas
run tests.helpers.fake_engine_main, the controller serving them until the test is done, and one
streamed request checked end to end."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable

import httpx

from deepfleet.config import FleetConfig
from deepfleet.engines.base import LaunchSpec, ReplicaPlan
from deepfleet.fleet.autoscaler import FleetAutoscaler
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.events import FleetEvent, Serving
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.lifecycle import Sharer, serve
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import NodeStatus, ReplicaStatus
from deepfleet.fleet.supervisor import Supervisor, SupervisorPolicy


class FakeEngineLauncher:
    """Replicas of the config's first model (its starting count) that run
    tests.helpers.fake_engine_main (20 tokens, 50 ms apart: 1 s streams; `engine_args:
    {tokens, delay_s}` change that);
    `engine_args: {fail: true}` makes an engine that exits at once."""

    name = "local"

    def __init__(self, tokens: int = 20, delay_s: float = 0.05) -> None:
        self._probe = HttpProbe()
        self._tokens, self._delay_s = tokens, delay_s

    def plans(self, cfg: FleetConfig, model_paths: dict[str, str]) -> list[ReplicaPlan]:
        m = cfg.models[0]
        count = m.fixed_replicas or 1
        return [ReplicaPlan(m, f"tiny-{i}", "/m", "127.0.0.1", free_port()) for i in range(count)]

    def runner(
        self,
        plan: ReplicaPlan,
        status: ReplicaStatus,
        on_change: Callable[[], None],
        policy: SupervisorPolicy,
    ) -> Supervisor:
        args = plan.model.engine_args
        tokens = args.get("tokens", self._tokens)
        delay = args.get("delay_s", self._delay_s)
        main = "tests.helpers.fake_engine_main"
        engine = f"{sys.executable} -m {main} {plan.port} e {tokens} {delay}"
        if plan.model.engine_args.get("fail"):
            engine = "sh -c 'exit 3'"
        return Supervisor(status, LaunchSpec(argv=["sh", "-c", f"exec {engine}"]),
                          plan.url + "/health", probe=self._probe, on_change=on_change,
                          policy=policy)  # fmt: skip

    async def nodes(self) -> list[NodeStatus]:
        return []

    async def close(self) -> None:
        await self._probe.close()


async def stream_once(client: httpx.AsyncClient, url: str, model: str = "tiny") -> str:
    """One streamed chat request; 'ok' when it ended with [DONE] and no error event."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return f"status {r.status_code}: {(await r.aread())[:200]!r}"
        events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    if any('"error"' in e for e in events):
        return f"error event: {next(e for e in events if 'error' in e)}"
    return "ok" if events and events[-1] == "data: [DONE]" else f"no [DONE]: {events[-1:]}"


async def wait_for(check: Callable[[], bool], seconds: float, step: float = 0.05) -> bool:
    """True as soon as `check()` holds; False after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(step)
    return False


@contextlib.asynccontextmanager
async def serving(
    controller: Controller,
    scaler: FleetAutoscaler | None = None,
    ready_s: float = 30,
    sharer: Sharer | None = None,
) -> AsyncIterator[list[FleetEvent]]:
    """The controller's `serve` loop (with `scaler` and `sharer`) until the block ends; the
    block starts once the fleet is Serving (fails after `ready_s`) and gets the events so
    far."""
    events: list[FleetEvent] = []
    stop = asyncio.Event()
    task = asyncio.create_task(serve(controller, events.append, stop, (), scaler, sharer=sharer))
    try:
        serving_ = await wait_for(lambda: any(isinstance(e, Serving) for e in events), ready_s)
        assert serving_, events
        yield events
    finally:
        stop.set()
        await task
