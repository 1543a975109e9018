"""HTTP health probes for supervised processes."""

from __future__ import annotations

import aiohttp


class HttpProbe:
    """GET a URL; healthy means HTTP 200 within the timeout. One pooled session for all probes."""

    def __init__(self, timeout_s: float = 3.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
