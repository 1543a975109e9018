"""A minimal keep-alive HTTP/1.1 client for engine requests (prototype for DFGW_RAW_UPSTREAM).

What the proxy uses of aiohttp's ClientResponse, over an asyncio Protocol with httptools' C
parser: `status`, `headers.get`, `content.readany()`, `read()`, `release()`, `close()`. Body
bytes from each HTTP chunk are appended to a list by one callback; `readany` joins what is
there. Reading is paused above a high-water mark. The read timeout is one lazy timer per
connection (re-armed only when it fires early), not one timer per read. Errors are raised as
aiohttp.ClientError subclasses so the proxy's except clauses stay as they are.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aiohttp
import httptools

HIGH_WATER = 1 << 18


class Headers(dict[str, str]):
    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


class UpstreamConn(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, key: tuple[str, int], read_timeout: float) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.read_timeout = read_timeout
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers = Headers()
        self.buf: list[bytes] = []
        self.size = 0
        self.complete = False
        self.got_bytes = False
        self.exc: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.head: asyncio.Future[None] = self.loop.create_future()
        self.paused = False
        self.active_at = time.monotonic()
        # DFGW_SPLICE: the body bytes of each read go straight to this callback (it writes them
        # to the client); it returns True when the client cannot take more: reading pauses.
        self.sink: Callable[[bytes], bool] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.active_at = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(aiohttp.ClientPayloadError(f"bad response from engine: {exc}"))
            self._abort()
            return
        sink = self.sink
        if sink is not None and self.buf:
            # Splice: what this read brought goes to the client in one write.
            buf = self.buf
            self.buf = []
            self.size = 0
            if sink(buf[0] if len(buf) == 1 else b"".join(buf)) and not self.paused:
                self.paused = True
                if self.transport is not None:
                    self.transport.pause_reading()
                w = self.waiter
                if w is not None and not w.done():
                    w.set_result(None)
            return
        if self.size > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(aiohttp.ServerDisconnectedError())

    # -- httptools callbacks -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.buf.append(body)
        self.size += len(body)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.parser.should_keep_alive():
            self.closed = True  # not reusable; closed after the body is read
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- response API --------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self.exc is None:
            self.exc = exc
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # mark retrieved
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _on_timer(self) -> None:
        if self.complete or self.closed:
            return
        waiting = self.waiter is not None or not self.head.done()
        left = self.active_at + self.read_timeout - time.monotonic()
        if left > 0 or not waiting:
            self.timer = self.loop.call_later(
                left if left > 0 else self.read_timeout, self._on_timer
            )
            return
        self._fail(aiohttp.SocketTimeoutError("engine silent for too long"))
        self._abort()

    async def _wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def readany(self) -> bytes:
        while True:
            if self.buf:
                buf = self.buf
                data = buf[0] if len(buf) == 1 else b"".join(buf)
                self.buf = []
                self.size = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self.exc is not None:
                raise self.exc
            await self._wait()

    async def wait_event(self) -> None:
        """Splice mode: until the answer completes, fails, or reading paused for the client."""
        if not (self.complete or self.exc is not None or self.paused):
            await self._wait()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def recycle(self) -> None:
        """Back to the pool when the answer was read whole, else closed."""
        self.timer.cancel()
        if self.complete and not self.closed and not self.buf:
            self.pool.put(self)
        else:
            self._abort()

    async def request(self, host: str, port: int, path: str, body: bytes) -> UpstreamResponse:
        assert self.transport is not None
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), host.encode(), port, len(body), body)
        )
        self.active_at = time.monotonic()
        self.timer = self.loop.call_later(self.read_timeout, self._on_timer)
        try:
            await self.head
        except BaseException:
            self.timer.cancel()
            self._abort()
            raise
        return UpstreamResponse(self)


class UpstreamResponse:
    """One answer; finalized once (recycled or closed), however often close() is called."""

    __slots__ = ("conn", "content", "done", "headers", "status")

    def __init__(self, conn: UpstreamConn) -> None:
        self.conn = conn
        self.done = False
        self.status = conn.status
        self.headers = conn.headers
        self.content = self  # aiohttp's `response.content.readany()` spelling

    async def readany(self) -> bytes:
        if self.done:
            return b""
        data = await self.conn.readany()
        if not data:
            self.release()
        return data

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    def release(self) -> None:
        if not self.done:
            self.done = True
            self.conn.recycle()

    close = release


class UpstreamPool:
    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle: dict[tuple[str, int], list[UpstreamConn]] = {}
        self._split: dict[str, tuple[str, int]] = {}

    def put(self, conn: UpstreamConn) -> None:
        conn.parser = httptools.HttpResponseParser(conn)
        conn._reset()
        conn.reused = True
        self.idle.setdefault(conn.key, []).append(conn)

    async def _connect(self, key: tuple[str, int]) -> UpstreamConn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConn(self, key, self.read_timeout), key[0], key[1]
                )
        except OSError as exc:
            raise aiohttp.ClientConnectionError(f"connect {key}: {exc}") from exc
        return conn

    async def post(self, url: str, path: str, body: bytes) -> UpstreamResponse:
        key = self._split.get(url)
        if key is None:
            u = urlsplit(url)
            key = self._split[url] = (u.hostname or "127.0.0.1", u.port or 80)
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            try:
                return await conn.request(key[0], key[1], path, body)
            except aiohttp.ClientError:
                if conn.got_bytes:
                    raise
                # A kept-alive connection the engine closed meanwhile: try a fresh one.
        conn = await self._connect(key)
        return await conn.request(key[0], key[1], path, body)

    def close(self) -> None:
        for conns in self.idle.values():
            for c in conns:
                c._abort()
        self.idle.clear()
