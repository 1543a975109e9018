"""Scale-down during 16 streams cuts none (issue 24): with 16 streams running on two replicas,
the autoscaler's scale-down 2 -> 1 drains the newest replica (the gateway sends it nothing
new, the streams it serves finish, then it stops); every stream ends with all its tokens and
[DONE]. Real gateway and controller, fake engines (tests/helpers)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from deepfleet.config import FleetConfig
from deepfleet.fleet.autoscaler import FleetAutoscaler
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import ReplicaState
from deepfleet.fleet.supervisor import SupervisorPolicy
from tests.helpers.fake_fleet import FakeEngineLauncher, serving

FAST = SupervisorPolicy(startup_timeout_s=20, health_interval_s=0.1, stop_grace_s=2)
TOKENS, DELAY_S = 40, 0.05  # 2 s streams
STREAMS = 16


async def stream(client: httpx.AsyncClient, url: str) -> tuple[str, str]:
    """('ok' or why not, the answer's text)."""
    body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return f"status {r.status_code}", ""
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    if any('"error"' in e for e in events):
        return "error event", ""
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return ("ok" if events and events[-1] == "[DONE]" else "no [DONE]"), text


def test_scale_down_during_16_streams_cuts_none(tmp_path: Path) -> None:
    cfg = FleetConfig.model_validate(
        {
            "models": [
                {
                    "name": "tiny",
                    "source": "org/tiny",
                    "replicas": {"min": 1, "max": 2},
                    "engine_args": {"tokens": TOKENS, "delay_s": DELAY_S},
                }
            ],
            "gateway": {"port": free_port(), "drain_grace_s": 30},
        }
    )
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    scaler = FleetAutoscaler(controller, interval_s=3600)  # decides nothing itself
    results: list[tuple[str, str]] = []
    seen: dict[str, Any] = {}

    def ready() -> list[str]:
        return [
            r.replica_id
            for r in controller.replicas_of("tiny")
            if r.state is ReplicaState.READY and not r.draining
        ]

    async def main() -> None:
        async with serving(controller, scaler):
            spec = cfg.models[0]
            await scaler._scale(spec, 1, 2)
            assert len(ready()) == 2
            await asyncio.sleep(0.5)  # the gateway routes to both
            url = controller.state.gateway_url
            done = asyncio.Event()

            async def load(client: httpx.AsyncClient) -> None:
                while not done.is_set():
                    results.append(await stream(client, url))

            async with httpx.AsyncClient(timeout=30) as client:
                clients = [asyncio.create_task(load(client)) for _ in range(STREAMS)]
                await asyncio.sleep(1.0)  # every stream is mid-way
                newest = controller.replicas_of("tiny")[-1]
                probe = await controller.probe_text(newest.url + "/metrics")
                seen["running_on_drained"] = probe
                started = time.monotonic()
                await scaler._scale(spec, 2, 1)  # drains the newest, then stops it
                seen["drain_s"] = time.monotonic() - started
                seen["left"] = [r.replica_id for r in controller.replicas_of("tiny")]
                await asyncio.sleep(1.0)  # the 16 streams go on, on one replica
                done.set()
                await asyncio.gather(*clients)

    asyncio.run(main())
    running = float(seen["running_on_drained"].split("vllm:num_requests_running ")[1].split()[0])
    assert running >= 4, seen["running_on_drained"]  # streams were mid-way on it
    assert seen["left"] == ["tiny-0"]
    assert seen["drain_s"] >= 1.0  # it waited for the streams: not a stop at once
    assert len(results) >= 2 * STREAMS
    (reference,) = {text for status, text in results if status == "ok"}
    assert len(reference.split()) == TOKENS  # every stream got the whole answer
    assert [r for r in results if r != ("ok", reference)] == [], results
