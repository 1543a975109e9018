"""A client that sends a whole oversize body at once, as Python's urllib does, must read the
413 (issue 19, finding 23). The gateway answers from Content-Length before reading the body
and, with `Connection: close`, used to close at once: the kernel then resets a connection with
unread data, and the client, still sending, saw ECONNRESET instead of the answer."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.security.gateway_edge import running_gateway


def post_64_mib(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=b"x" * (64 << 20),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_urllib_posting_64_mib_reads_the_413(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as (url, _):
        status, body = await asyncio.to_thread(post_64_mib, url)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"


async def test_the_gateway_still_serves_after_the_413(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as (url, _):
        await asyncio.to_thread(post_64_mib, url)
        status, _ = await asyncio.to_thread(post_64_mib, url)
    assert status == 413
