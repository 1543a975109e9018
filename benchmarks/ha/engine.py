"""A zero-model engine for the HA limits benchmark that keeps its own usage books.

It streams `--tokens` chunks `--itl-ms` apart for any chat request, ends with a usage event
(prompt tokens: PROMPT_TOKENS, completion: the chunks sent) and [DONE], and adds a request to
its books only once that usage event and [DONE] were written: what an engine reports is what
a gateway's usage ledger must add up to. GET /usage returns the books.

    python benchmarks/ha/engine.py --port 9001 --tokens 20 --itl-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

PROMPT_TOKENS = 7


def make_app(tokens: int, itl_s: float) -> web.Application:
    books = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cut": 0}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = min(int(body.get("max_tokens") or tokens), tokens)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        try:
            for i in range(n):
                delta = {"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}
                await resp.write(
                    b"data: " + json.dumps({**base, "choices": [delta]}).encode() + b"\n\n"
                )
                if itl_s:
                    await asyncio.sleep(itl_s)
            usage = {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": n,
                "total_tokens": PROMPT_TOKENS + n,
            }
            await resp.write(
                b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"
            )
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            books["cut"] += 1
            raise
        books["requests"] += 1
        books["prompt_tokens"] += PROMPT_TOKENS
        books["completion_tokens"] += n
        return resp

    async def usage(request: web.Request) -> web.Response:
        return web.json_response(books)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/usage", usage)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--itl-ms", type=float, default=10.0)
    args = p.parse_args()
    web.run_app(
        make_app(args.tokens, args.itl_ms / 1000), host="127.0.0.1", port=args.port, print=None
    )


if __name__ == "__main__":
    main()
