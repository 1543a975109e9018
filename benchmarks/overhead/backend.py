"""A zero-model-time OpenAI backend for overhead benchmarks: vLLM-shaped SSE, as fast as we can.

A raw asyncio Protocol on uvloop with httptools' C parser (no ASGI, no framework): each stream
is a pre-built chunk written N times, one chunk per event-loop turn (so streams interleave and
each token is its own write, as an engine emits them), respecting the transport's flow control.

Routes: POST /v1/chat/completions and /v1/completions (streamed or not, `max_tokens` tokens,
usage with `stream_options.include_usage`), GET /health, /v1/models, /metrics (vLLM names),
and the probes the Rust routers send (/get_model_info, /get_server_info, /version, ...).
Unknown paths get 404 and are counted in /metrics (`backend_unknown_path_total`), so a router
probing something new shows up.

    python benchmarks/overhead/backend.py --port 9000 [--procs 2] [--tokens 256] [--itl-ms 0]

--procs > 1 starts that many processes on one port (SO_REUSEPORT). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter, deque
from typing import Any

import httptools
import uvloop

MODEL = "bench"
JSON = b"application/json"
CREATED = int(time.time())


def _response(status: bytes, body: bytes, ctype: bytes = JSON) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + ctype
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
CHUNK_END = b"0\r\n\r\n"
DONE = b"data: [DONE]\n\n"


def _chunk(event: bytes) -> bytes:
    """One SSE event as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(event), event)


def _event(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


class Stats:
    def __init__(self, started: float) -> None:
        self.started = started
        self.requests = 0
        self.running = 0
        self.connections = 0
        self.tokens = 0
        self.unknown: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()

    def metrics(self) -> bytes:
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="{MODEL}"}} {self.running}',
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="{MODEL}"}} 0',
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} 0.0',
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{model_name="{MODEL}"}} {self.requests}',
            "# TYPE vllm:generation_tokens_total counter",
            f'vllm:generation_tokens_total{{model_name="{MODEL}"}} {self.tokens}',
            "# TYPE backend_connections_total counter",
            f"backend_connections_total {self.connections}",
            "# TYPE backend_path_total counter",
            *(f'backend_path_total{{path="{p}"}} {n}' for p, n in sorted(self.seen.items())),
            "# TYPE backend_unknown_path_total counter",
            *(f'backend_unknown_path_total{{path="{p}"}} {n}' for p, n in self.unknown.items()),
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {sum(os.times()[:2]):.3f}",
        ]
        return ("\n".join(lines) + "\n").encode()


MODELS = _dumps(
    {
        "object": "list",
        "data": [
            {
                "id": MODEL,
                "object": "model",
                "created": CREATED,
                "owned_by": "vllm",
                "root": MODEL,
                "parent": None,
                "max_model_len": 32768,
            }
        ],
    }
)
MODEL_INFO = _dumps(
    {
        "model_path": MODEL,
        "tokenizer_path": MODEL,
        "is_generation": True,
        "served_model_name": MODEL,
    }
)
SERVER_INFO = _dumps(
    {
        "model_path": MODEL,
        "served_model_name": MODEL,
        "tp_size": 1,
        "dp_size": 1,
        "max_total_num_tokens": 1 << 20,
        "version": "0.0.0-bench",
    }
)
STATIC: dict[bytes, bytes] = {
    b"/health": _response(b"200 OK", b"{}"),
    b"/health_generate": _response(b"200 OK", b"{}"),
    b"/ping": _response(b"200 OK", b"{}"),
    b"/v1/models": _response(b"200 OK", MODELS),
    b"/get_model_info": _response(b"200 OK", MODEL_INFO),
    b"/model_info": _response(b"200 OK", MODEL_INFO),
    b"/get_server_info": _response(b"200 OK", SERVER_INFO),
    b"/server_info": _response(b"200 OK", SERVER_INFO),
    b"/version": _response(b"200 OK", b'{"version":"0.0.0-bench"}'),
    b"/get_load": _response(b"200 OK", b'[{"dp_rank":0,"num_reqs":0,"num_waiting_reqs":0}]'),
}
NOT_FOUND = _response(b"404 Not Found", b'{"detail":"Not Found"}')
BAD_REQUEST = _response(b"400 Bad Request", b'{"error":{"message":"bad request"}}')


class Stream:
    """One streamed answer: role event, `n` token events (one per loop turn), finish, usage,
    [DONE]; paused while the transport's buffer is over its high-water mark."""

    __slots__ = ("conn", "itl", "left", "tail", "token")

    def __init__(self, conn: Conn, n: int, token: bytes, tail: bytes, itl: float) -> None:
        self.conn = conn
        self.left = n
        self.token = token
        self.tail = tail
        self.itl = itl

    def step(self) -> None:
        conn = self.conn
        if conn.closed:
            conn.server.stats.running -= 1
            return
        if conn.paused:
            conn.waiting = self
            return
        if self.left > 0:
            conn.transport.write(self.token)
            self.left -= 1
            if self.itl:
                conn.loop.call_later(self.itl, self.step)
            else:
                conn.loop.call_soon(self.step)
            return
        conn.transport.write(self.tail)
        conn.server.stats.running -= 1
        conn.finish()


class Server:
    def __init__(self, tokens: int, itl_s: float) -> None:
        self.tokens = tokens
        self.itl_s = itl_s
        self.stats = Stats(time.time())


class Conn(asyncio.Protocol):
    __slots__ = (
        "body",
        "busy",
        "closed",
        "keep_alive",
        "loop",
        "parser",
        "paused",
        "pending",
        "server",
        "transport",
        "url",
        "waiting",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.paused = False
        self.closed = False
        self.busy = False
        self.keep_alive = True
        self.waiting: Stream | None = None
        self.pending: deque[tuple[bytes, bytes, bytes, bool]] = deque()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.server.stats.connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiting is not None:  # a stream paused on flow control: release it
            self.waiting = None
            self.server.stats.running -= 1

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        s = self.waiting
        if s is not None:
            self.waiting = None
            self.loop.call_soon(s.step)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()
            self.closed = True

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        req = (
            self.parser.get_method(),
            self.url.split(b"?", 1)[0],
            b"".join(self.body),
            self.parser.should_keep_alive(),
        )
        if self.busy:  # pipelined: answer in order
            self.pending.append(req)
        else:
            self.handle(*req)

    # -- requests ----------------------------------------------------------------------------
    def finish(self) -> None:
        self.busy = False
        if not self.keep_alive:
            self.transport.close()
            self.closed = True
        elif self.pending:
            self.handle(*self.pending.popleft())

    def handle(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> None:
        self.busy = True
        self.keep_alive = keep_alive
        stats = self.server.stats
        stats.seen[path.decode("latin-1")] += 1
        if method == b"POST" and path in (b"/v1/chat/completions", b"/v1/completions"):
            self.generate(path == b"/v1/chat/completions", body)
            return
        if path == b"/metrics":
            self.transport.write(_response(b"200 OK", stats.metrics(), b"text/plain"))
        else:
            answer = STATIC.get(path)
            if answer is None:
                stats.unknown[f"{method.decode()} {path.decode('latin-1')}"] += 1
                answer = NOT_FOUND
            self.transport.write(answer)
        self.finish()

    def generate(self, chat: bool, raw: bytes) -> None:
        try:
            req = json.loads(raw)
            model = str(req.get("model") or MODEL)
        except (ValueError, AttributeError):
            self.transport.write(BAD_REQUEST)
            self.finish()
            return
        n = req.get("max_completion_tokens") or req.get("max_tokens") or self.server.tokens
        n = max(1, int(n))
        stats = self.server.stats
        stats.requests += 1
        stats.tokens += n
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        usage = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}
        if not req.get("stream"):
            text = " tok" * n
            choice: dict[str, Any] = (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "length",
                }
                if chat
                else {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
            )
            obj = "chat.completion" if chat else "text_completion"
            out = {"id": rid, "object": obj, "created": CREATED, "model": model}
            out |= {"choices": [choice], "usage": usage}
            self.transport.write(_response(b"200 OK", _dumps(out)))
            self.finish()
            return
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": rid, "object": obj, "created": CREATED, "model": model}

        def choice_of(text: str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                delta = {} if text is None else {"content": text}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

        token = _chunk(_event(head | {"choices": [choice_of(" tok", None)]}))
        tail = [_event(head | {"choices": [choice_of(None, "length")]})]
        if (req.get("stream_options") or {}).get("include_usage"):
            tail.append(_event(head | {"choices": [], "usage": usage}))
        tail.append(DONE)
        first = (
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            | {"finish_reason": None}
            if chat
            else choice_of("", None)
        )
        stats.running += 1
        self.transport.write(STREAM_HEAD + _chunk(_event(head | {"choices": [first]})))
        end = b"".join(_chunk(e) for e in tail) + CHUNK_END
        stream = Stream(self, n, token, end, self.server.itl_s)
        self.loop.call_soon(stream.step)


def listen_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def serve(host: str, port: int, tokens: int, itl_s: float) -> None:
    server = Server(tokens, itl_s)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: Conn(server), sock=listen_socket(host, port), backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        await stop.wait()


def run_one(host: str, port: int, tokens: int, itl_s: float) -> None:
    uvloop.run(serve(host, port, tokens, itl_s))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--procs", type=int, default=1, help="processes sharing the port")
    p.add_argument("--tokens", type=int, default=256, help="tokens when max_tokens is absent")
    p.add_argument("--itl-ms", type=float, default=0.0, help="gap between tokens (0: none)")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("the benchmark backend binds loopback only")
    itl_s = args.itl_ms / 1000.0
    if args.procs <= 1:
        run_one(args.host, args.port, args.tokens, itl_s)
        return
    children = []
    for _ in range(args.procs):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            run_one(args.host, args.port, args.tokens, itl_s)
            os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        for c in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for c in children:
        while True:
            try:
                os.waitpid(c, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break


if __name__ == "__main__":
    main()
