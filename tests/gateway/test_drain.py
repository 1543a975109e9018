"""SIGTERM drains the gateway: it stops accepting, and every admitted request finishes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.helpers.processes import gateway_with_fake_engines

MODEL = "tiny"


async def stream(session: aiohttp.ClientSession, url: str) -> list[bytes]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        return [line.strip() async for line in resp.content if line.strip()]


def test_sigterm_drains_admitted_requests(tmp_path: Path) -> None:
    # 40 tokens 50 ms apart: each stream lasts about 2 s.
    with gateway_with_fake_engines(tmp_path, MODEL, engine_args=("40", "0.05")) as rig:

        async def scenario() -> tuple[list[list[bytes]], str]:
            async with aiohttp.ClientSession() as s:
                tasks = [asyncio.create_task(stream(s, rig.url)) for _ in range(16)]
                await asyncio.sleep(0.5)
                rig.gateway.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                try:
                    async with (
                        aiohttp.ClientSession() as fresh,
                        fresh.get(rig.url + "/health") as resp,
                    ):
                        late = f"accepted with {resp.status}"
                except aiohttp.ClientConnectionError:
                    late = "refused"
                return await asyncio.gather(*tasks), late

        results, late = asyncio.run(scenario())
        assert late == "refused"
        for events in results:
            assert events[-1] == b"data: [DONE]"
            assert sum(b"-w" in e for e in events) == 40
        # uvicorn re-raises the signal once drained, so the exit is "killed by SIGTERM".
        assert rig.gateway.wait(10) in (0, -signal.SIGTERM)
