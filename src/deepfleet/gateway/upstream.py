"""The engine client: keep-alive HTTP/1.1 over an asyncio Protocol, parsed by httptools (C).

The relay is bound by Python work per socket read, so this client keeps that work small: one
`data_received` feeds the C parser, whose `on_body` callback is the body list's own `append`
(an engine sends each SSE event as an HTTP chunk, so a Python `on_body` was a frame per event,
with its wake-up: 518 of 1,598 Python calls per 256-event request, benchmarks/overhead/calls.py),
then wakes the reader once; `read()` hands the caller everything that arrived since its last
call as one bytes object. There is one read-timeout timer per connection, re-armed only when
it fires early, not one per read. Reading pauses above a high-water mark, so a slow client
slows its engine, not our memory.

Errors: `UpstreamError` for a refused, reset or malformed connection, `TimeoutError` for an
engine that stays silent longer than the read timeout (or does not accept a connection in time),
`ReplicaLost` (an UpstreamError) for the connections `UpstreamPool.lose` cut because the fleet
state says their engine is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 1 << 18


class UpstreamError(Exception):
    """The engine refused, closed or garbled the connection."""


class ReplicaLost(UpstreamError):
    """The fleet state shows the engine lost (its node dead, its replica restarting)."""


class UpstreamConn(asyncio.Protocol):
    """One connection, reused for one request after another (HTTP/1.1 keep-alive)."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.read_timeout = pool.read_timeout
        self.busy_peers = pool.busy.setdefault(key, set())
        """The pool's connections to this engine with a request on them (for `lose`)."""
        self.buf: list[bytes] = []
        """The body bytes not read yet: one list for the connection's life (the parser holds
        its `append`), emptied by `read()`."""
        self.on_body: Callable[[bytes], None] = self.buf.append
        """httptools' body callback (looked up once, when a parser is made)."""
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.buf.clear()
        self.size = 0
        """Bytes received since the last `read()` (chunk framing included)."""
        self.complete = False
        self.got_bytes = False
        self.exc: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.head: asyncio.Future[None] = self.loop.create_future()
        self.paused = False
        self.in_request = False
        self.active_at = time.monotonic()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.active_at = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"bad response from the engine: {exc}"))
            self.abort()
            return
        if self.buf:
            self._wake()
        self.size += len(data)
        if self.size > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamError("the engine closed the connection"))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.head.done():
            self.head.set_result(None)

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.parser.should_keep_alive():
            self.closed = True  # not reusable: closed once the answer was read
        self._wake()

    # -- internals -------------------------------------------------------------------------
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.exc is None:
            self.exc = exc
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: raised from request() if anyone waits
        self._wake()

    def abort(self) -> None:
        self.closed = True
        self.busy_peers.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()

    def lose(self, why: str) -> None:
        """Fail what waits on this connection with ReplicaLost, and close it."""
        if not self.complete:
            self._fail(ReplicaLost(why))
        self.abort()

    def _arm(self, at: float) -> None:
        """The timer fires at `at` (time.monotonic()) or earlier: one already pending for an
        earlier time stays (it re-arms itself when it finds the deadline moved)."""
        if self.timer is not None:
            if self.timer_at <= at:
                return
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_later(at - time.monotonic(), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.complete or self.closed or not self.in_request:
            return  # the next request arms it again
        left = self.active_at + self.read_timeout - time.monotonic()
        waiting = self.waiter is not None or not self.head.done()
        if left > 0 or not waiting:
            self._arm(time.monotonic() + (left if left > 0 else self.read_timeout))
            return
        self._fail(TimeoutError("the engine was silent for longer than the read timeout"))
        self.abort()

    def set_read_timeout(self, seconds: float) -> None:
        """Change this answer's longest silence (a stream's stall deadline). The timer moves
        only when it would fire too late, so a connection serving stream after stream with one
        stall deadline arms it about once per deadline, and reads cost nothing more."""
        self.read_timeout = seconds
        if not self.complete and not self.closed:
            self._arm(self.active_at + seconds)

    async def request(self, head: bytes, body: bytes) -> UpstreamResponse:
        """Send a request (`head` up to the Content-Length value); returns at its answer's head."""
        assert self.transport is not None
        self.busy_peers.add(self)
        self.in_request = True
        self.transport.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        self.active_at = time.monotonic()
        self.read_timeout = self.pool.read_timeout
        self._arm(self.active_at + self.read_timeout)
        on_sent = self.pool.on_sent
        if on_sent is not None:
            on_sent()  # the engine computes meanwhile
        try:
            await self.head
        except BaseException:
            self.abort()
            raise
        return UpstreamResponse(self)

    async def read(self) -> bytes:
        """What arrived since the last call (waiting for something); b"" at the end."""
        while True:
            buf = self.buf
            if buf:
                data = buf[0] if len(buf) == 1 else b"".join(buf)
                buf.clear()
                self.size = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self.exc is not None:
                raise self.exc
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def recycle(self) -> None:
        """Back to the pool when the answer was read whole, else closed. A pending timer
        stays: it stops when it fires on an idle connection (cheaper than a cancel per
        request)."""
        if self.complete and not self.closed and not self.buf:
            self.busy_peers.discard(self)
            self._reset()
            self.pool.idle.setdefault(self.key, []).append(self)
        else:
            self.abort()


class UpstreamResponse:
    """One answer. `close()` releases the connection once: back to the pool when the answer
    was read to its end, else closed (which makes vLLM abort the request)."""

    __slots__ = ("conn", "done", "headers", "status")

    def __init__(self, conn: UpstreamConn) -> None:
        self.conn = conn
        self.done = False
        self.status = conn.status
        self.headers = conn.headers

    @property
    def ended(self) -> bool:
        """The answer came whole and the caller read all of it: a next `read()` gives b""."""
        conn = self.conn
        return conn.complete and not conn.buf

    def header(self, name: bytes, default: str) -> str:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else default

    async def read(self) -> bytes:
        """The next bytes of the body, b"" at its end."""
        if self.done:
            return b""
        data = await self.conn.read()
        if not data:
            self.close()
        return data

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.conn.recycle()


class UpstreamPool:
    """Idle keep-alive connections per engine address. `on_sent` is called after each request
    is written, while the engine computes: work that can wait runs then."""

    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        on_sent: Callable[[], None] | None = None,
        engine_key: str | None = None,
    ) -> None:
        self.auth = b"Authorization: Bearer %s\r\n" % engine_key.encode() if engine_key else b""
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.on_sent = on_sent
        self.idle: dict[tuple[str, int], list[UpstreamConn]] = {}
        self.busy: dict[tuple[str, int], set[UpstreamConn]] = {}
        """Connections with a request on them, per engine address (for `lose`)."""
        self._targets: dict[tuple[str, str], tuple[tuple[str, int], bytes]] = {}

    def _target(self, url: str, path: str) -> tuple[tuple[str, int], bytes]:
        """The engine's address and the request head up to the Content-Length value."""
        target = self._targets.get((url, path))
        if target is None:
            u = urlsplit(url)
            key = (u.hostname or "127.0.0.1", u.port or 80)
            head = (
                b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"%sContent-Length: " % (path.encode(), key[0].encode(), key[1], self.auth)
            )
            target = self._targets[(url, path)] = (key, head)
        return target

    async def post(self, url: str, path: str, body: bytes) -> UpstreamResponse:
        """POST `body` (JSON) to `url + path`; returns once the status line and headers came."""
        key, head = self._target(url, path)
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            try:
                return await conn.request(head, body)
            except UpstreamError:
                if conn.got_bytes:
                    raise
                # A kept-alive connection the engine closed meanwhile: try another one.
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConn(self, key), key[0], key[1]
                )
        except OSError as exc:
            raise UpstreamError(
                f"cannot connect to {key[0]}:{key[1]}: {exc.strerror or exc}"
            ) from exc
        return await conn.request(head, body)

    def lose(self, url: str, why: str) -> int:
        """Cut every connection to the engine at `url`: requests on them fail with
        ReplicaLost (a stream migrates, a request without an answer yet goes elsewhere).
        Returns how many requests were cut."""
        u = urlsplit(url)
        key = (u.hostname or "127.0.0.1", u.port or 80)
        for conn in self.idle.pop(key, []):
            conn.abort()
        busy = self.busy.get(key, set())
        cut = list(busy)
        busy.clear()
        for conn in cut:
            conn.lose(why)
        return len(cut)

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.abort()
        self.idle.clear()
