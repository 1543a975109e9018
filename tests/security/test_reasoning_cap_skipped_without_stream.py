"""Finding 6, second part: a key's reasoning cap was enforced only on streams, so a client whose
key may think 10 tokens asked for a non-streamed answer and got all of the engine's thinking
(and paid nothing for the difference). Now a non-streamed answer is cut at the cap too: its
reasoning to about the cap's share, no answer, finish_reason "length", usage counting the cap.

The gateway runs as its own process (`python -m deepfleet.gateway`, as the controller starts
it), in front of the test suite's fake engine answering R1-style (30 thinking tokens)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import (
    FleetState,
    ModelRoute,
    ReplicaState,
    ReplicaStatus,
    write_state,
)
from deepfleet.gateway.keys import KeyStore
from tests.helpers.fake_engine import FakeEngine

MODEL = "r1"
CAP = 10


async def _ready(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(150):
            assert proc.returncode is None, "the gateway exited"
            try:
                if (await client.get(url + "/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the gateway did not start")


async def test_a_non_streamed_answer_cannot_think_past_the_keys_cap(tmp_path: Path) -> None:
    engine = FakeEngine("e0")
    await engine.start()
    engine.ctl.reasoning_tokens, engine.ctl.tokens = 30, 4
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = FleetState(1, url, models=[ModelRoute(MODEL, "round_robin")])
    state.replicas.append(
        ReplicaStatus(f"{MODEL}-0", MODEL, "vllm", engine.url, ReplicaState.READY)
    )
    write_state(tmp_path / "fleet.json", state)
    keys = KeyStore(tmp_path / "keys.db")
    _, secret = keys.create("thinks-little", reasoning_cap=CAP)
    keys.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deepfleet.gateway", "--state-file", str(tmp_path / "fleet.json"),
        "--host", "127.0.0.1", "--port", str(port),
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _ready(url, proc)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "think first"}],
                "reasoning_cap": 10_000}  # fmt: skip
        async with httpx.AsyncClient() as client:
            r = await client.post(
                url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {secret}"},
                timeout=30,
            )
        assert r.status_code == 200, r.text
        answer = r.json()
        choice = answer["choices"][0]
        thoughts = choice["message"]["reasoning"].count("think")
        assert thoughts <= CAP, f"{thoughts} thinking tokens passed a cap of {CAP}"
        assert not choice["message"]["content"]  # no answer after the cap, as on a stream
        assert choice["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == CAP
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        await engine.stop()
