"""A minimal streaming OpenAI server for client tests (aiohttp, 127.0.0.1, ephemeral port)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class FakeEngine:
    tokens: int = 3
    gap_s: float = 0.01
    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)
    prefix_queries: int = 0
    prefix_hits: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        text = (
            f'vllm:prefix_cache_queries_total{{engine="0"}} {self.prefix_queries}\n'
            f'vllm:prefix_cache_hits_total{{engine="0"}} {self.prefix_hits}\n'
        )
        return web.Response(text=text)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if self.status != 200:
            return web.json_response({"error": {"message": "boom"}}, status=self.status)
        self.prefix_queries += 10
        self.prefix_hits += 4
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chat = "messages" in body
        for index in range(self.tokens):
            await asyncio.sleep(self.gap_s)
            choice = {"index": 0, "delta": {"content": f"t{index}"}} if chat else {"text": "t"}
            await response.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        usage = {"prompt_tokens": 7, "completion_tokens": self.tokens, "total_tokens": 0}
        await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response


async def start(engine: FakeEngine) -> TestServer:
    server = TestServer(engine.app(), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[FakeEngine], Awaitable[str]]]:
    """Start fake engines on 127.0.0.1; yields a function returning each one's base URL."""
    servers: list[TestServer] = []

    async def run(engine: FakeEngine) -> str:
        servers.append(await start(engine))
        return str(servers[-1].make_url("")).rstrip("/")

    yield run
    for server in servers:
        await server.close()
