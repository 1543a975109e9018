"""Closed-loop streaming load with a raw asyncio Protocol client (cheaper per chunk than aiohttp).

`concurrency` slots each hold one keep-alive connection and send one streamed chat request
after another. A run is warm-up, then a measured window [t0, t1): SSE events received in the
window are counted, TTFT is kept for requests sent in the window; then no new request starts
and in-flight streams finish (bounded by `drain_s`, after which connections are cut).

An event (chunk) is one `data: ` prefix in the de-chunked body; a stream that ends with
another number of events than expected counts as an error.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

P = b"data: "


def chat_request(host: str, port: int, model: str, tokens: int, usage: bool = False) -> bytes:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": tokens,
        "stream": True,
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    raw = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    ).encode()
    return head + raw


@dataclass
class Totals:
    events: int = 0
    reads: int = 0


@dataclass
class Result:
    sent_at: float
    ttft_s: float | None
    events: int
    ok: bool
    error: str = ""


class Conn(asyncio.Protocol):
    """One keep-alive connection; httptools (C) parses the response and undoes the chunked
    framing (a router may re-chunk, splitting an event across HTTP chunks)."""

    def __init__(self, totals: Totals) -> None:
        self.totals = totals
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.fut: asyncio.Future[Result] | None = None
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, request: bytes) -> asyncio.Future[Result]:
        assert self.transport is not None
        self.fut = asyncio.get_running_loop().create_future()
        self.carry = b""
        self.events = 0
        self.status = 0
        self.ttft: float | None = None
        self.sent = time.perf_counter()
        self.transport.write(request)
        return self.fut

    def _finish(self, ok: bool, error: str = "") -> None:
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result(Result(self.sent, self.ttft, self.events, ok, error))

    def data_received(self, data: bytes) -> None:
        if self.fut is None:
            return
        self.totals.reads += 1
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(False, f"parse {exc}")
            self.close()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        n = data.count(P)
        if self.carry:
            n += (self.carry + data[:5]).count(P)
        if n:
            if self.ttft is None:
                self.ttft = time.perf_counter() - self.sent
            self.events += n
            self.totals.events += n
        self.carry = data[-5:] if len(data) >= 5 else (self.carry + data)[-5:]

    def on_message_complete(self) -> None:
        if self.status != 200:
            self._finish(False, f"HTTP {self.status}")
        else:
            self._finish(True)
        if not self.parser.should_keep_alive():
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish(False, "connection lost")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass
class RunResult:
    concurrency: int
    window_s: float
    events: int
    reads: int
    completed: int
    errors: int
    error_kinds: dict[str, int]
    ttft_s: list[float] = field(default_factory=list)
    drained: bool = True


async def run_load(
    host: str,
    port: int,
    request: bytes,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    drain_s: float,
    expect_events: int,
    on_window: Callable[[str], None],
    stagger_s: float = 0.0,
) -> RunResult:
    """One bounded run; `on_window("start"|"end")` is called at t0 and t1 (CPU snapshots)."""
    loop = asyncio.get_running_loop()
    totals = Totals()
    stop = False
    t0 = t1 = float("inf")
    ttfts: list[float] = []
    completed = 0
    errors: dict[str, int] = {}
    conns: list[Conn] = []

    async def slot() -> None:
        nonlocal completed
        conn: Conn | None = None
        if stagger_s:  # paced streams: spread the slots' starts so they do not move in waves
            await asyncio.sleep(random.uniform(0, stagger_s))
        while not stop:
            if conn is None or conn.closed:
                try:
                    _, proto = await loop.create_connection(lambda: Conn(totals), host, port)
                except OSError as exc:
                    kind = f"connect {type(exc).__name__}"
                    errors[kind] = errors.get(kind, 0) + 1
                    await asyncio.sleep(0.05)
                    continue
                conn = proto
                conns.append(conn)
            res = await conn.send(request)
            if res.ok and res.events != expect_events:
                res = Result(res.sent_at, res.ttft_s, res.events, False, "event count")
            if t0 <= res.sent_at < t1:
                if res.ok:
                    completed += 1
                    if res.ttft_s is not None:
                        ttfts.append(res.ttft_s)
                else:
                    errors[res.error] = errors.get(res.error, 0) + 1
            if not res.ok:
                conn.close()
                conn = None

    tasks = [asyncio.create_task(slot()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_s)
    on_window("start")
    t0 = time.perf_counter()
    e0, r0 = totals.events, totals.reads
    await asyncio.sleep(duration_s)
    t1 = time.perf_counter()
    e1, r1 = totals.events, totals.reads
    on_window("end")
    stop = True
    _, pending = await asyncio.wait(tasks, timeout=drain_s)
    for c in conns:
        c.close()
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return RunResult(
        concurrency=concurrency,
        window_s=t1 - t0,
        events=e1 - e0,
        reads=r1 - r0,
        completed=completed,
        errors=sum(errors.values()),
        error_kinds=errors,
        ttft_s=ttfts,
        drained=not pending,
    )
