"""Attack: the admin routes read a POST body whole, with no bound (the public API stops at
`max_body_bytes`). A client holding an admin key (or any leaked one) sends a key request
padded to gigabytes, declared or chunked, and the gateway worker buffers all of it. Now an
admin body over 64 KiB is refused with 413 `request_too_large` in the OpenAI envelope: from
Content-Length before the body is read, or as soon as a chunked body passes the bound."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp

from tests.gateway.conftest import Rig

PADDING = 1024 * 1024  # 16 times the bound, a thousand times a real key request


def _admin(rig: Rig) -> dict[str, str]:
    _, secret = rig.keys.create("ops", admin=True)
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def _assert_too_large(status: int, body: bytes) -> None:
    assert status == 413, body[:200]
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"


async def test_a_padded_key_request_is_413(rig: Rig) -> None:
    padded = b'{"name": "flood"}' + b" " * PADDING  # valid JSON, 1 MiB
    async with aiohttp.ClientSession() as s:
        async with s.post(rig.url + "/admin/keys", data=padded, headers=_admin(rig)) as r:
            _assert_too_large(r.status, await r.read())
        async with s.post(rig.url + "/admin/keys", json={"name": "real"}, headers=_admin(rig)) as r:
            assert r.status == 201  # a real key request still works
    assert [k.name for k in rig.keys.all() if k.name == "flood"] == []


async def test_a_chunked_key_request_is_cut_off(rig: Rig) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "flood"'
        for _ in range(PADDING // 65536):
            yield b" " * 65536
        yield b"}"

    async with (
        aiohttp.ClientSession() as s,
        s.post(rig.url + "/admin/keys", data=chunks(), headers=_admin(rig)) as r,
    ):
        _assert_too_large(r.status, await r.read())


async def test_a_declared_gigabyte_is_refused_before_it_is_sent(rig: Rig) -> None:
    headers = _admin(rig)
    port = int(rig.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /admin/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % (headers["Authorization"].encode(), 2**30)
        )
        await writer.drain()
        async with asyncio.timeout(5):  # the answer comes without the gigabyte
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head
    finally:
        writer.close()
