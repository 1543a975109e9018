"""Health probes for supervised processes: HTTP for engines, the gateway and the UI; a TCP
connect for stores that speak no HTTP (the shared KV store)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from urllib.parse import urlsplit

import aiohttp


class HttpProbe:
    """GET a URL; healthy means HTTP 200 within the timeout. One pooled session for all probes.
    A `tcp://host:port` URL is healthy when a connection opens within the timeout, and an
    `ipc://PATH` one (a Unix socket, e.g. the KV event relay's) likewise."""

    def __init__(self, timeout_s: float = 3.0) -> None:
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> bool:
        if url.startswith("tcp://"):
            return await self._connects(url)
        if url.startswith("ipc://"):
            return await self._connects_unix(url.removeprefix("ipc://"))
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def text(self, url: str) -> str | None:
        """The body of a 200 answer to GET `url`; None on any other outcome."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url) as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            return None

    async def _connects(self, url: str) -> bool:
        parts = urlsplit(url)
        return await self._opens(asyncio.open_connection(parts.hostname, parts.port))

    async def _connects_unix(self, path: str) -> bool:
        return await self._opens(asyncio.open_unix_connection(path))

    async def _opens(
        self, opening: Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    ) -> bool:
        """True when the connection opens within the timeout; it is closed at once."""
        try:
            _, writer = await asyncio.wait_for(opening, self._timeout_s)
        except (TimeoutError, OSError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
