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

The subclass relies on uvicorn's private `HttpToolsProtocol`: `loop` set by its constructor,
the transport given to `connection_made` being the one it writes to, `scope` rebuilt by
`on_message_begin` and handed to the app as is. pyproject pins uvicorn to the minor version
this was tested with; tests/gateway/test_uvicorn_pin.py fails when that no longer holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOOKS = "deepfleet.connection"


class HeadHoldingTransport:
    """The connection's transport, with `hold_next()`; everything else is passed through."""

    __slots__ = ("_held", "_hold", "_loop", "_t")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._t = transport
        self._loop = loop
        self._hold = False
        self._held: bytes | None = None

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
        self._t.close()

    def is_closing(self) -> bool:
        return self._t.is_closing()

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
    """uvicorn's httptools protocol, its transport wrapped, `HOOKS` in every scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.holding = HeadHoldingTransport(transport, self.loop)
        self.hooks = ConnectionHooks(self.holding)
        self.extensions = {HOOKS: self.hooks}
        super().connection_made(self.holding)  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # uvicorn types extension values as dicts; this one is the connection's hooks object.
        self.scope["extensions"] = self.extensions  # type: ignore[typeddict-item]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.hooks.connection_lost()
