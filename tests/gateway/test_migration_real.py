"""Migration on two real vLLM CPU engines: a greedy stream whose engine is SIGKILLed
mid-stream completes with [DONE], no error event, and the text of an uninterrupted run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import MODEL, Fleet, running_fleet, status_json

pytestmark = pytest.mark.slow

CONFIG = f"""
models:
  - name: {MODEL}
    source: bundled
    engine: vllm-cpu
    replicas: 2
    max_model_len: 2048
"""
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
    "max_tokens": 160,
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
    "stream_options": {"include_usage": True},
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("migrate"), CONFIG) as f:
        yield f


async def running_on(session: aiohttp.ClientSession, replicas: list[dict[str, Any]]) -> int:
    """The pid of the engine that has a request running."""
    for r in replicas:
        async with session.get(str(r["endpoint"]) + "/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("vllm:num_requests_running") and float(line.split()[-1]) > 0:
                    return int(r["pid"])
    raise AssertionError("no engine runs the stream")


async def run(fleet: Fleet, kill_after: int | None) -> list[str]:
    replicas = status_json(fleet.state_dir)["replicas"]
    assert isinstance(replicas, list)
    events: list[str] = []
    timeout = aiohttp.ClientTimeout(total=240)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(fleet.url + "/v1/chat/completions", json=BODY) as resp,
    ):
        assert resp.status == 200
        async for line in resp.content:
            if line.strip():
                events.append(line.decode().strip())
                if kill_after is not None and len(events) == kill_after:
                    os.kill(await running_on(session, replicas), signal.SIGKILL)
    return events


def text_of(events: list[str]) -> tuple[str, str, int]:
    ids, text = set(), ""
    usage = 0
    for e in events:
        data = e.removeprefix("data: ")
        if data == "[DONE]":
            continue
        obj = json.loads(data)
        assert "error" not in obj, obj
        ids.add(obj["id"])
        usage = (obj.get("usage") or {}).get("completion_tokens", usage)
        for c in obj["choices"]:
            text += c["delta"].get("content") or ""
    assert len(ids) == 1
    return text, ids.pop(), usage


def test_sigkilled_engine_mid_stream_continues_exactly(pair: Fleet) -> None:
    reference = asyncio.run(run(pair, None))
    migrated = asyncio.run(run(pair, 40))
    assert migrated[-1] == "data: [DONE]"
    ref_text, _, ref_usage = text_of(reference)
    text, _, usage = text_of(migrated)
    assert text == ref_text
    assert usage == ref_usage == 160
