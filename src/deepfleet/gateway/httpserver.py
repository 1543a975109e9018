"""uvicorn's httptools protocol with two hooks a streamed answer uses: send the response head
together with the first body bytes, and hear of the client's disconnect without a task.

uvicorn writes `http.response.start` to the socket at once, so a streamed answer leaves as two
writes: the head, then the first chunk. On loopback or a fast network each write wakes the
client, which reads the head alone, parses it and sleeps again before the first chunk comes;
that second wake-up is on every request's time to first token. The Rust routers write both in
one `writev`.

A streamed answer must also end when its client goes away. ASGI says so through `receive()`,
which needs a task waiting on it for the whole stream (created, stepped and cancelled once per
request). The connection knows first: it calls the hook the answer registered.

The scope's `extensions[HOOKS]` is the connection's `ConnectionHooks` (one per connection;
requests on a connection are served one after another):
- `hold_head()` before `http.response.start`: the connection's next write (the head) is held
  and goes out joined to the write after it (the first body bytes). If no write follows in the
  same event-loop iteration, the head goes out alone then.
- `watch(on_lost)`: `on_lost()` is called once when the connection is lost (at once if it
  already was); the response stops watching with `watch(None)` when it ends.
Servers without this protocol (tests on an ASGI transport) lack the extension; responses then
send as usual and wait on `receive()`.

The connection also guards the gateway against slow and oversize senders (issue 19, findings 9
and 23; the limits are `EdgeSettings`, from the gateway config section, reached through
`EdgeConfig`):
- the request head must arrive within `head_timeout_s` of the connection (or of its first byte
  on a kept-alive connection) and stay under `max_header_bytes` (httptools itself has no
  bound): past either the connection is closed (431 for the size);
- the body must arrive within `body_timeout_s` of the head: past it a 408 in the OpenAI error
  envelope is written (if no answer started) and the connection closed. The clock waits while
  the gateway, not the client, holds the body back (reading paused);
- over `max_connections` a request is answered 503 in the envelope and its connection closed;
- when an answer ends before its request's body has arrived (a 413 on Content-Length) and the
  connection is to close, closing at once would reset it: the client, still sending, never
  reads the answer. The connection lingers instead, reading and discarding up to
  `LINGER_BYTES` within the body deadline, then closes.

The subclass relies on uvicorn's private `HttpToolsProtocol`: `loop` set by its constructor,
the transport given to `connection_made` being the one it writes to, `scope` rebuilt by
`on_message_begin` and handed to the app as is. pyproject pins uvicorn to the minor version
this was tested with; tests/gateway/test_uvicorn_pin.py fails when that no longer holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from deepfleet.gateway.deadline import Deadline
from deepfleet.gateway.errors import error_body
from deepfleet.gateway.settings import EdgeSettings

HOOKS = "deepfleet.connection"
LINGER_BYTES = 128 * 1024 * 1024
"""Most bytes of an unread body discarded after its answer before the connection closes."""
PAUSED_RECHECK_S = 1.0


class EdgeConfig(uvicorn.Config):
    """uvicorn's Config with the gateway's connection limits (pickled to each worker)."""

    def __init__(self, *args: Any, edge: EdgeSettings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge = edge or EdgeSettings()


class HeadHoldingTransport:
    """The connection's transport, with `hold_next()`; everything else is passed through."""

    __slots__ = ("_held", "_hold", "_loop", "_t", "lingering", "on_close")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._t = transport
        self._loop = loop
        self._hold = False
        self._held: bytes | None = None
        self.lingering = False
        self.on_close: Callable[[], bool] | None = None
        """Asked on close(); True: the connection lingers and calls close_now() later."""

    def hold_next(self) -> None:
        self._hold = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._t.write(held + data)
        elif self._hold:
            self._hold = False
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._t.write(data)

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._t.write(held)

    def close(self) -> None:
        self._flush()
        if self.lingering:
            return
        if self.on_close is not None and self.on_close():
            self.lingering = True
            return
        self._t.close()

    def close_now(self) -> None:
        self._flush()
        self.lingering = False
        self._t.close()

    def is_closing(self) -> bool:
        return self.lingering or self._t.is_closing()

    def pause_reading(self) -> None:
        self._t.pause_reading()

    def resume_reading(self) -> None:
        self._t.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class ConnectionHooks:
    """What a response may ask of the connection it is sent on."""

    __slots__ = ("_on_lost", "hold_head", "lost")

    def __init__(self, transport: HeadHoldingTransport) -> None:
        self.hold_head: Callable[[], None] = transport.hold_next
        self.lost = False
        self._on_lost: Callable[[], None] | None = None

    def watch(self, on_lost: Callable[[], None] | None) -> None:
        """Call `on_lost` once when the connection is lost, at once if it already was; None
        stops watching."""
        if on_lost is not None and self.lost:
            on_lost()
            return
        self._on_lost = on_lost

    def connection_lost(self) -> None:
        self.lost = True
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost()


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its transport wrapped, `HOOKS` in every scope, and the
    connection's deadlines and bounds (module docstring)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.edge = config.edge if isinstance(config, EdgeConfig) else EdgeSettings()
        self.deadline = Deadline(self.loop)
        self.in_head = True
        self.head_bytes = 0
        self.discarded = 0
        self.mute = False  # answered from here: what comes next is discarded unparsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.holding = HeadHoldingTransport(transport, self.loop)
        self.holding.on_close = self._linger_instead
        self.hooks = ConnectionHooks(self.holding)
        self.extensions = {HOOKS: self.hooks}
        super().connection_made(self.holding)  # type: ignore[arg-type]
        self._arm(self.edge.head_timeout_s, self._head_late)

    def data_received(self, data: bytes) -> None:
        if self.mute:
            self._discard(len(data))
            return
        if self.in_head:
            self.head_bytes += len(data)
        super().data_received(data)
        if (
            self.in_head
            and self.head_bytes > self.edge.max_header_bytes
            and not self.holding.is_closing()
        ):
            self._answer(431, "the request head is too large", "headers_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # uvicorn types extension values as dicts; this one is the connection's hooks object.
        self.scope["extensions"] = self.extensions  # type: ignore[typeddict-item]
        if self.deadline.due is None:  # (deadline.set, not _arm: a frame less per request)
            self.deadline.set(self.edge.head_timeout_s, self._head_late)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        self.deadline.set(self.edge.body_timeout_s, self._body_late)
        if len(self.connections) > self.edge.max_connections:
            app, self.app = self.app, _over_capacity
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle.response_complete:
            self._discard(len(body))
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head = True
        self.deadline.clear()
        if self.holding.lingering:
            self.holding.close_now()

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline.cancel()
        self.holding.lingering = False
        self.holding.on_close = None
        super().connection_lost(exc)
        self.hooks.connection_lost()

    # -- deadlines and lingering ----------------------------------------------------------
    def _arm(self, seconds: float, then: Callable[[], None]) -> None:
        self.deadline.set(seconds, then)

    def _head_late(self) -> None:
        self.holding.close_now()

    def _body_late(self) -> None:
        if self.flow.read_paused and not self.holding.lingering:
            # The gateway holds the body back, not the client: wait for the app to read.
            self._arm(PAUSED_RECHECK_S, self._body_late)
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not self.holding.lingering:
            self._answer(408, "the request body did not arrive in time", "request_timeout")
            return
        self.holding.close_now()

    def _answer(self, status: int, message: str, code: str) -> None:
        """Answer in the envelope from the connection itself (the app, if it runs, hears of a
        disconnect), then linger and close."""
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        body = error_body(status, message, code=code)
        self.holding.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        self.in_head = False
        self.mute = True
        self.holding.lingering = True
        self.flow.resume_reading()
        self._arm(min(self.edge.body_timeout_s, 2.0), self.holding.close_now)

    def _linger_instead(self) -> bool:
        """On close after an answer: linger while the request's body is still coming."""
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.parser is None or self.in_head:
            return False
        self.flow.resume_reading()
        if self.deadline.due is None:
            self._arm(self.edge.body_timeout_s, self.holding.close_now)
        return True

    def _discard(self, size: int) -> None:
        self.discarded += size
        if self.discarded > LINGER_BYTES:
            self.holding.close_now()


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    body = error_body(503, "the gateway has too many connections", code="too_many_connections")
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
