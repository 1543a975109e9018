"""Fake engines that speak vLLM's P/D protocol (kv_transfer_params) on real sockets.

Not the simulator and not vLLM: each engine's "greedy output" is a fixed function of the
prompt, so an answer computed after a KV transfer can be compared with one computed by an
aggregated engine. As with NIXL, the decode engine pulls the KV from the prefill engine
itself (GET /kv/{block} on the remote_host/port the prefill answer named); the gateway only
carries the handle. A handle whose blocks are gone makes the decode engine recompute the
prompt (vLLM's `kv_load_failure_policy: recompute`), counted in `recomputed`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


def greedy(prompt: str, n: int) -> list[str]:
    """The deterministic "model": token i of the answer to `prompt`."""
    seed = sum(prompt.encode())
    return [f" t{(seed * 31 + i * 7) % 997}" for i in range(n)]


def prompt_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    return str(body.get("prompt", ""))


@dataclass
class PdEngine:
    name: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    blocks: dict[int, str] = field(default_factory=dict)
    pulled: int = 0
    recomputed: int = 0
    computed: int = 0
    fail: bool = False
    delay_s: float = 0.0
    status: int = 200
    """Answer prefill requests with this status when not 200 (a request the engine refuses)."""
    port: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._empty)
        app.router.add_get("/metrics", self._empty)
        app.router.add_get("/kv/{block}", self._kv)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _empty(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _kv(self, request: web.Request) -> web.Response:
        prompt = self.blocks.pop(int(request.match_info["block"]), None)  # freed once read
        if prompt is None:
            return web.Response(status=404)
        return web.json_response({"prompt": prompt})

    async def _pull(self, params: dict[str, Any]) -> str | None:
        url = f"http://{params['remote_host']}:{params['remote_port']}"
        block = params["remote_block_ids"][0]
        async with aiohttp.ClientSession() as s, s.get(f"{url}/kv/{block}") as r:
            return str((await r.json())["prompt"]) if r.status == 200 else None

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if self.fail:
            return web.json_response({"error": {"message": "boom"}}, status=500)
        prompt, params = prompt_of(body), body.get("kv_transfer_params") or {}
        chat = request.path.endswith("chat/completions")
        if params.get("do_remote_decode") and self.status != 200:
            return web.json_response({"error": {"message": "refused"}}, status=self.status)
        if params.get("do_remote_decode"):
            await asyncio.sleep(self.delay_s)
            block = next(self._ids)
            self.blocks[block] = prompt
            self.computed += 1
            handle = {
                "do_remote_prefill": True,
                "do_remote_decode": False,
                "remote_engine_id": self.name,
                "remote_block_ids": [block],
                "remote_host": "127.0.0.1",
                "remote_port": self.port,
            }
            return web.json_response(
                {**self._answer(chat, greedy(prompt, 1)), "kv_transfer_params": handle}
            )
        if params.get("do_remote_prefill"):
            pulled = await self._pull(params)
            if pulled is None:
                self.recomputed += 1
            else:
                assert pulled == prompt, "the KV pulled belongs to another prompt"
                self.pulled += 1
        else:
            self.computed += 1
        tokens = greedy(prompt, int(body.get("max_tokens") or 8))
        if not body.get("stream"):
            return web.json_response(self._answer(chat, tokens))
        return await self._stream(request, chat, tokens)

    def _answer(self, chat: bool, tokens: list[str]) -> dict[str, Any]:
        text = "".join(tokens)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}}
            if chat
            else {"index": 0, "text": text}
        )
        usage = {"prompt_tokens": 3, "completion_tokens": len(tokens), "total_tokens": 3}
        return {"id": "x", "object": "x", "model": "pd", "choices": [choice], "usage": usage}

    async def _stream(
        self, request: web.Request, chat: bool, tokens: list[str]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for t in tokens:
            delta = {"delta": {"content": t}} if chat else {"text": t}
            event = {"id": "x", "object": "x", "model": "pd", "choices": [{"index": 0, **delta}]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await asyncio.sleep(0)
        await resp.write(b"data: [DONE]\n\n")
        return resp
