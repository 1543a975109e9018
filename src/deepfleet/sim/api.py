"""The simulated engine's HTTP surface, shaped like vLLM's OpenAI server (vLLM 0.32): chat and
text completions (streaming or not), /v1/models, /health, /metrics, /kv_event_sources,
/reset_prefix_cache. Field names and error bodies follow vLLM's, so clients and routers tested
here work against vLLM. The model card says owned_by "deepfleet-simulator".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from deepfleet.sim.engine import RequestStream, SimEngine
from deepfleet.sim.metrics import CONTENT_TYPE
from deepfleet.sim.output import Token

OWNER = "deepfleet-simulator"
FINGERPRINT = "deepfleet-simulator"
_json = msgspec.json.Encoder()
ENGINE_KEY = web.AppKey("engine", SimEngine)
EVENTS_KEY = web.AppKey("kv_events", dict)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.status}}  # fmt: skip
        return web.Response(body=_json.encode(body), status=self.status,
                            content_type="application/json")  # fmt: skip


def create_app(engine: SimEngine, kv_events: Mapping[str, Any] | None = None) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[ENGINE_KEY] = engine
    app[EVENTS_KEY] = dict(kv_events or {})
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/kv_event_sources", _event_sources)
    app.router.add_post("/reset_prefix_cache", _reset)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return exc.response()


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    card = {"id": engine.config.model, "object": "model", "created": int(time.time()),
            "owned_by": OWNER, "root": engine.config.model, "parent": None,
            "max_model_len": engine.config.max_model_len, "permission": []}  # fmt: skip
    return _json_response({"object": "list", "data": [card]})


async def _metrics(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    return web.Response(
        body=engine.metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE}
    )


async def _event_sources(request: web.Request) -> web.Response:
    return _json_response({"0": request.app[EVENTS_KEY]} if request.app[EVENTS_KEY] else {})


async def _reset(request: web.Request) -> web.Response:
    ok = request.app[ENGINE_KEY].cache.reset()
    return web.Response(status=200 if ok else 400)


def _json_response(body: Any) -> web.Response:
    return web.Response(body=_json.encode(body), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"invalid JSON body: {exc}", "Bad Request") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "Bad Request")
    engine = request.app[ENGINE_KEY]
    if body.get("model") not in (None, engine.config.model):
        raise ApiError(404, f"The model `{body.get('model')}` does not exist. Valid aliases: "
                            f"{engine.config.model}.", "NotFoundError", "model")  # fmt: skip
    if int(body.get("n") or 1) != 1:
        raise ApiError(400, "the simulator supports n=1 only", "Bad Request", "n")
    return body


def _limits(engine: SimEngine, body: Mapping[str, Any], prompt: list[int]) -> int:
    limit = engine.config.max_model_len
    if len(prompt) >= limit:
        raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, "
                            f"your request has {len(prompt)} input tokens.", "BadRequestError",
                       "messages")  # fmt: skip
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    room = limit - len(prompt)
    if asked is None:
        return room
    if int(asked) < 1 or int(asked) > room:
        message = f"max_tokens={asked} must be between 1 and {room} for {len(prompt)} tokens"
        raise ApiError(400, message, "BadRequestError", "max_tokens")
    return int(asked)


async def _chat(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    body = await _body(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: Field required", "Bad Request", "body.messages")
    prompt = engine.tokenizer.encode(engine.tokenizer.render_chat(messages))
    max_tokens = _limits(engine, body, prompt)
    stream = engine.submit(prompt, max_tokens, bool(body.get("ignore_eos")))
    return await _respond(request, engine, stream, body, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    body = await _body(request)
    raw = body.get("prompt")
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str | list):
        raw = raw[0]
    if isinstance(raw, str):
        prompt = engine.tokenizer.encode(raw)
    elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        prompt = list(raw)
    else:
        raise ApiError(400, "prompt must be a string or a list of token ids", "Bad Request",
                       "prompt")  # fmt: skip
    max_tokens = _limits(engine, body, prompt)
    stream = engine.submit(prompt, max_tokens, bool(body.get("ignore_eos")))
    return await _respond(request, engine, stream, body, chat=False)


async def _respond(
    request: web.Request, engine: SimEngine, stream: RequestStream, body: Mapping[str, Any],
    chat: bool,
) -> web.StreamResponse:  # fmt: skip
    try:
        if body.get("stream"):
            return await _stream(request, engine, stream, body, chat)
        return await _complete(engine, stream, chat)
    finally:
        engine.abort(stream)


def _usage(stream: RequestStream) -> dict[str, int]:
    prompt, done = len(stream.seq.prompt_ids), len(stream.seq.output_ids)
    return {"prompt_tokens": prompt, "total_tokens": prompt + done, "completion_tokens": done}


async def _complete(engine: SimEngine, stream: RequestStream, chat: bool) -> web.Response:
    reasoning: list[str] = []
    content: list[str] = []
    async for tokens in stream.tokens():
        for token in tokens:
            _route(engine, token, reasoning, content, chat)
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": engine.config.model}  # fmt: skip
    finish = stream.finish_reason
    if chat:
        message = {"role": "assistant", "content": "".join(content), "refusal": None,
                   "annotations": None, "audio": None, "function_call": None,
                   "reasoning": "".join(reasoning) if reasoning else None}  # fmt: skip
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None,
                                  "finish_reason": finish, "stop_reason": None}  # fmt: skip
    else:
        choice = {"index": 0, "text": "".join(content), "logprobs": None, "finish_reason": finish,
                  "stop_reason": None}  # fmt: skip
    return _json_response({**head, "choices": [choice], "system_fingerprint": FINGERPRINT,
                           "usage": _usage(stream)})  # fmt: skip


def _route(
    engine: SimEngine, token: Token, reasoning: list[str], content: list[str], chat: bool
) -> None:
    """In chat, with a reasoning parser, the thinking goes apart and </think> disappears;
    text completions return the raw text, as vLLM does."""
    if chat and engine.config.reasoning_parser:
        if token.reasoning:
            reasoning.append(token.text)
        elif token.text != "</think>":
            content.append(token.text)
    else:
        content.append(token.text)


async def _stream(
    request: web.Request, engine: SimEngine, stream: RequestStream, body: Mapping[str, Any],
    chat: bool,
) -> web.StreamResponse:  # fmt: skip
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": engine.config.model}  # fmt: skip
    first = True
    async for tokens in stream.tokens():
        finish = stream.finish_reason
        reasoning: list[str] = []
        content: list[str] = []
        for token in tokens:
            _route(engine, token, reasoning, content, chat)
        parts: list[tuple[str, str]] = []
        if reasoning:
            parts.append(("reasoning", "".join(reasoning)))
        if content or not parts:
            parts.append(("content", "".join(content)))
        chunks = []
        for index, (field, text) in enumerate(parts):
            last = index == len(parts) - 1
            if chat:
                delta: dict[str, Any] = {field: text}
                if first:
                    role = {"index": 0, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None}  # fmt: skip
                    chunks.append({**head, "choices": [role]})
                    first = False
                choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish if last else None}  # fmt: skip
            else:
                choice = {"index": 0, "text": text, "logprobs": None,
                          "finish_reason": finish if last else None}  # fmt: skip
            if last and finish is not None:
                choice["stop_reason"] = None
            chunks.append({**head, "choices": [choice]})
        await response.write(b"".join(b"data: " + _json.encode(c) + b"\n\n" for c in chunks))
    options = body.get("stream_options") or {}
    if options.get("include_usage"):
        usage: dict[str, Any] = {
            **head,
            "choices": [],
            "usage": _usage(stream),
            "system_fingerprint": FINGERPRINT,
        }
        await response.write(b"data: " + _json.encode(usage) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
