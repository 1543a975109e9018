"""A deterministic fake engine for migration tests: it writes the words `w0 w1 ...` (after R1
style thoughts `t0 t1 ... </think>` when asked), continuing from the words its prompt already
holds, so a continuation elsewhere gives exactly the text of an uninterrupted stream.

Prompts are decoded with the bundled model's tokenizer when they are token ids, so the
gateway's token-level continuation is checked end to end. Faults: die (reset) or stall after
`fail_after` events of a stream.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class Control:
    words: int = 12
    thoughts: int = 0
    fail: str = ""  # "" | die | stall
    fail_after: int = 4
    fail_times: int = 1  # faults left to inject, over every engine sharing this Control
    requests: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)


def script(ctl: Control) -> list[str]:
    """The whole raw output: thoughts, </think>, then the answer words."""
    out = [f" t{i}" for i in range(ctl.thoughts)]
    if ctl.thoughts:
        out.append("</think>")
    return out + [f" w{i}" for i in range(ctl.words)]


def already(prompt: str, ctl: Control) -> int:
    """How many pieces of the script the prompt already ends with."""
    done = len(re.findall(r" t\d+", prompt)) + len(re.findall(r" w\d+", prompt))
    if ctl.thoughts and "</think>" in prompt:
        done += 1
    return done


class MigrationEngine:
    def __init__(self, name: str, tokenizer: Path, ctl: Control) -> None:
        from tokenizers import Tokenizer

        self.name = name
        self.ctl = ctl
        self.tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.stopping = asyncio.Event()
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/chat/completions", self.generate)
        app.router.add_post("/v1/completions", self.generate)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({})

    def _prompt(self, body: dict[str, Any], chat: bool) -> str:
        if chat:
            return "".join(str(m.get("content") or "") for m in body["messages"])
        prompt = body["prompt"]
        if isinstance(prompt, list):
            return str(self.tok.decode(prompt, skip_special_tokens=False))
        return str(prompt)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        ctl = self.ctl
        body = await request.json()
        ctl.requests += 1
        self.requests += 1
        ctl.bodies.append(body)
        chat = request.path.endswith("chat/completions")
        prompt = self._prompt(body, chat)
        pieces = script(ctl)[already(prompt, ctl) :]
        if body.get("max_tokens"):
            pieces = pieces[: body["max_tokens"]]
        obj = "chat.completion" if chat else "text_completion"
        head = {"id": f"{self.name}-id", "object": obj, "created": 7, "model": body["model"]}
        if not body.get("stream"):
            text = "".join(pieces)
            think, _, answer = text.rpartition("</think>")
            message = {"role": "assistant", "content": answer, "reasoning": think or None}
            choice = {"index": 0, "message": message} if chat else {"index": 0, "text": text}
            usage = {"prompt_tokens": 3, "completion_tokens": len(pieces), "total_tokens": 3}
            if ctl.fail == "die" and ctl.fail_times > 0:
                ctl.fail_times -= 1
                assert request.transport is not None
                request.transport.abort()
            return web.json_response({**head, "choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head["object"] = obj + ".chunk"
        thinking = bool(ctl.thoughts) and "</think>" not in prompt

        async def event(data: dict[str, Any]) -> None:
            await resp.write(f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode())

        if chat:
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}}
            await event({**head, "choices": [role]})
        failing = bool(ctl.fail) and ctl.fail_times > 0
        if failing:
            ctl.fail_times -= 1
        for i, piece in enumerate(pieces):
            if failing and i == ctl.fail_after:
                if ctl.fail == "stall":
                    await self.stopping.wait()
                assert request.transport is not None
                request.transport.abort()
                return resp
            if piece == "</think>":
                thinking = False
                if chat:
                    continue
            last = "length" if i == len(pieces) - 1 else None
            if chat:
                delta = {"reasoning": piece} if thinking else {"content": piece}
                choice = {"index": 0, "delta": delta, "finish_reason": last}
            else:
                choice = {"index": 0, "text": piece, "finish_reason": last}
            await event({**head, "choices": [choice]})
            await asyncio.sleep(0.002)
        if (body.get("stream_options") or {}).get("include_usage"):
            n = len(self.tok.encode(prompt).ids) if not chat else 3
            made = len(self.tok.encode("".join(pieces), add_special_tokens=False).ids)
            usage = {"prompt_tokens": n, "completion_tokens": made}
            await event({**head, "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        return resp
