"""Run one or many simulated engines in one process and one event loop.

Engine i listens on 127.0.0.1:(port + i) and, with KV events, publishes on the endpoint's port
+ i (as vLLM offsets the endpoint for data-parallel ranks). All engines share the tokenizer,
the latency profile and one ZMQ context.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq
from aiohttp import web

from deepfleet.sim.api import create_app
from deepfleet.sim.engine import Clock, EngineConfig, ScaledClock, SimEngine
from deepfleet.sim.kv_cache import KvEvent
from deepfleet.sim.kv_events import ZmqPublisher
from deepfleet.sim.output import OutputModel
from deepfleet.sim.profile import LatencyProfile
from deepfleet.sim.tokenizer import Tokenizer

HOST = "127.0.0.1"


@dataclass(frozen=True)
class RunningEngine:
    engine: SimEngine
    url: str
    kv_endpoint: str | None


def offset_endpoint(endpoint: str, offset: int) -> str:
    """tcp://host:5557 -> tcp://host:(5557 + offset); other endpoints get a suffix."""
    match = re.fullmatch(r"(tcp://.+):(\d+)", endpoint)
    if match is None:
        return endpoint if offset == 0 else f"{endpoint}_{offset}"
    return f"{match.group(1)}:{int(match.group(2)) + offset}"


@contextlib.asynccontextmanager
async def serve_engines(
    config: EngineConfig,
    profile: LatencyProfile,
    tokenizer: Tokenizer,
    *,
    count: int = 1,
    port: int = 8100,
    kv_events: str | None = None,
    clock: Clock | None = None,
    on_ready: Callable[[Sequence[RunningEngine]], None] | None = None,
) -> AsyncIterator[list[RunningEngine]]:
    """Start `count` engines (port 0: ephemeral ports); stop them all on exit."""
    output = OutputModel(tokenizer, reasons=config.reasoning_parser or _reasons(config))
    context: zmq.Context[Any] | None = zmq.Context() if kv_events else None
    runners: list[web.AppRunner] = []
    publishers: list[ZmqPublisher] = []
    running: list[RunningEngine] = []
    try:
        for index in range(count):
            publish: Callable[[Sequence[KvEvent]], None] | None = None
            endpoint = None
            if context is not None and kv_events:
                endpoint = offset_endpoint(kv_events, index)
                publisher = ZmqPublisher(context, endpoint)
                publishers.append(publisher)
                publish = _publisher(publisher, config.block_size)
            engine = SimEngine(config, profile, tokenizer, output, clock or ScaledClock(), publish)
            events_config = _events_config(endpoint)
            runner = web.AppRunner(create_app(engine, events_config), access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, HOST, port + index if port else 0)
            await site.start()
            bound = runner.addresses[0][1]
            engine.start()
            running.append(RunningEngine(engine, f"http://{HOST}:{bound}", endpoint))
        if on_ready is not None:
            on_ready(running)
        yield running
    finally:
        for item in running:
            await item.engine.stop()
        await asyncio.gather(*(r.cleanup() for r in runners), return_exceptions=True)
        for publisher in publishers:
            publisher.close()
        if context is not None:
            context.term()


def _reasons(config: EngineConfig) -> bool:
    from deepfleet.sim.build import is_reasoning_model

    return is_reasoning_model(config.model)


def _publisher(publisher: ZmqPublisher, block_size: int) -> Callable[[Sequence[KvEvent]], None]:
    def publish(events: Sequence[KvEvent]) -> None:
        publisher.publish(events, block_size)

    return publish


def _events_config(endpoint: str | None) -> dict[str, Any]:
    if endpoint is None:
        return {}
    return {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": endpoint,
            "replay_endpoint": None, "topic": ""}  # fmt: skip
