"""uvicorn's httptools protocol, able to send a response head together with its first body bytes.

uvicorn writes `http.response.start` to the socket at once, so a streamed answer leaves as two
writes: the head, then the first chunk. On loopback or a fast network each write wakes the
client, which reads the head alone, parses it and sleeps again before the first chunk comes;
that second wake-up is on every request's time to first token. The Rust routers write both in
one `writev`.

A response that wants one write calls the scope's `extensions[HOLD_HEAD]["hold"]()` (ASGI
extensions are dicts) before `http.response.start`: the connection's next write (the head) is
held and goes out joined to the write after it (the first body bytes). If no write follows in
the same event-loop iteration, the head goes out alone then. Servers without this protocol
(tests on an ASGI transport) lack the extension, and responses are sent as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOLD_HEAD = "deepfleet.hold_head"


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


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its transport wrapped, `HOLD_HEAD` in every scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.holding = HeadHoldingTransport(transport, self.loop)
        super().connection_made(self.holding)  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {HOLD_HEAD: {"hold": self.holding.hold_next}}
