"""The real gateway process routing with the KV context: two workers share the simulated
engines' KV events through the relay, and requests follow their cached prefix."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest

from deepfleet.config.schema import GatewaySpec
from deepfleet.fleet.ports import free_port
from tests.helpers.processes import spawn, stop
from tests.kvcache.sim_fleet import MODEL, sim_fleet, tokenizer_folder

pytestmark = pytest.mark.skipif(
    not (tokenizer_folder() / "tokenizer.json").is_file(), reason="bundled model not prepared"
)
SYSTEMS = [" ".join(f"group{g} word{i} of the shared prompt" for i in range(80)) for g in range(3)]


def body(system: str, question: str) -> bytes:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return json.dumps({"model": MODEL, "messages": messages, "max_tokens": 3}).encode()


async def metrics(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("deepfleet_") and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = out.get(key, 0.0) + float(value)
    return out


async def test_two_workers_route_by_prefix_through_the_relay(tmp_path: Path) -> None:
    async with sim_fleet(tmp_path, count=3) as fleet, aiohttp.ClientSession() as session:
        settings = tmp_path / "gateway.json"
        settings.write_text(GatewaySpec(keys_db=tmp_path / "keys.db").model_dump_json())
        port = free_port()
        argv = [sys.executable, "-m", "deepfleet.gateway", "--state-file", str(fleet.state_path),
                "--settings", str(settings), "--port", str(port), "--workers", "2"]  # fmt: skip
        gateway = spawn(argv, tmp_path / "gateway.log")
        url = f"http://127.0.0.1:{port}"
        try:

            async def up() -> bool:
                try:
                    async with session.get(url + "/ready") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            for _ in range(200):
                if await up():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # the relay binds the engines' ports on its first pass
            for system in SYSTEMS:  # one new prefix each, then repeats of it
                for question in ("first", "second", "third", "fourth"):
                    async with session.post(
                        url + "/v1/chat/completions", data=body(system, question),
                        headers={"Content-Type": "application/json"},
                    ) as r:  # fmt: skip
                        assert r.status == 200, await r.text()
                    await asyncio.sleep(0.2)  # its blocks reach both workers' indexes
            got = await metrics(session, url)
            decisions = {k: v for k, v in got.items() if k.startswith("deepfleet_routing_dec")}
            prefix = sum(v for k, v in decisions.items() if 'reason="prefix"' in k)
            assert sum(decisions.values()) == 12 and prefix >= 9, decisions
            assert sum(e.engine.cache.hits for e in fleet.engines) > 0
        finally:
            stop(gateway)
