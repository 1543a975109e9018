"""A minimal OpenAI-speaking test engine (not the simulator): fixed text, controllable faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class EngineControl:
    mode: str = "ok"  # ok | die_midstream | die_at_start | error500 | hang
    tokens: int = 5
    reasoning_tokens: int = 0  # R1-style: this many "reasoning" deltas before the answer
    delay_s: float = 0.0
    requests: int = 0
    cancelled: int = 0
    running: int = 0  # generation requests in flight, reported on /metrics as vLLM does
    bodies: list[dict[str, object]] = field(default_factory=list)


def _usage(n: int) -> dict[str, int]:
    return {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}


def make_app(ctl: EngineControl, name: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({})

    async def generate(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        ctl.requests += 1
        ctl.bodies.append(body)
        chat = request.path.endswith("chat/completions")
        if ctl.mode == "error500":
            return web.json_response(
                {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}},
                status=500,
            )
        if ctl.mode == "hang":
            await asyncio.sleep(3600)
        words = [f"{name}-w{i} " for i in range(ctl.tokens)]
        thoughts = [f"think{i} " for i in range(ctl.reasoning_tokens)] if chat else []
        obj = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            text = "".join(words)
            message = {"role": "assistant", "content": text, "reasoning": "".join(thoughts) or None}
            choice = (
                {"index": 0, "message": message, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": text, "finish_reason": "length"}
            )
            return web.json_response(
                {
                    "id": "x",
                    "object": obj,
                    "created": 0,
                    "model": body["model"],
                    "choices": [choice],
                    "usage": _usage(len(words) + len(thoughts)),
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for t in thoughts:
                delta = {"index": 0, "delta": {"reasoning": t}, "finish_reason": None}
                chunk = {
                    "id": "x",
                    "object": obj + ".chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [delta],
                }
                await resp.write(f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode())
                if ctl.delay_s:
                    await asyncio.sleep(ctl.delay_s)
            for i, w in enumerate(words):
                if (ctl.mode == "die_midstream" and i == 2) or ctl.mode == "die_at_start":
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                choice = (
                    {"index": 0, "delta": {"content": w}, "finish_reason": None}
                    if chat
                    else {"index": 0, "text": w, "finish_reason": None}
                )
                chunk = {
                    "id": "x",
                    "object": obj + ".chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [choice],
                }
                await resp.write(f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode())
                if ctl.delay_s:
                    await asyncio.sleep(ctl.delay_s)
            if (body.get("stream_options") or {}).get("include_usage"):
                last = {
                    "id": "x",
                    "object": obj + ".chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [],
                    "usage": _usage(len(words)),
                }
                await resp.write(f"data: {json.dumps(last)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            ctl.cancelled += 1
            raise
        return resp

    @web.middleware
    async def count_running(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        ctl.running += 1
        try:
            return await handler(request)
        finally:
            ctl.running -= 1

    async def metrics(request: web.Request) -> web.Response:
        text = f"vllm:num_requests_running {ctl.running}\nvllm:num_requests_waiting 0\n"
        return web.Response(text=text)

    app = web.Application(middlewares=[count_running])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_post("/v1/completions", generate)
    return app


class FakeEngine:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ctl = EngineControl()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        # A handler still running (mode "hang") holds cleanup for shutdown_timeout: 1 s, not
        # aiohttp's 60 s per engine.
        self._runner = web.AppRunner(
            make_app(self.ctl, self.name), handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
