"""Slowloris and friends (issue 19, finding 9): a client that sends its head or body slowly, or
never, or a huge head, or opens more connections than the gateway serves, must not hold the
gateway's resources past the configured deadlines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.security.gateway_edge import read_all, running_gateway

EDGE = {"head_timeout_s": 1.0, "body_timeout_s": 1.5}


async def test_a_silent_connection_is_closed_after_the_head_deadline(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, **EDGE) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await read_all(reader, within_s=3.0) == b""
        writer.close()


async def test_a_trickled_head_is_closed_after_the_head_deadline(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, **EDGE) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle() -> None:
            for _ in range(30):
                writer.write(b"X")
                await asyncio.sleep(0.1)

        trickler = asyncio.create_task(trickle())
        got = await read_all(reader, within_s=3.0)
        trickler.cancel()
        assert b"200" not in got.split(b"\r\n")[0]
        writer.close()


async def test_a_slow_body_gets_408_in_the_envelope(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, **EDGE) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":'
        )
        got = await read_all(reader, within_s=4.0)
        writer.close()
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), got
        assert json.loads(body)["error"]["code"] == "request_timeout"


async def test_a_huge_head_gets_431(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, **EDGE) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000)
        got = await read_all(reader, within_s=3.0)
        writer.close()
        assert got.startswith(b"HTTP/1.1 431"), got[:200]


async def test_connections_beyond_the_cap_get_503(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, max_connections=2, **EDGE) as (_, port):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        got = await read_all(reader, within_s=3.0)
        writer.close()
        for _, w in idle:
            w.close()
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), got
        assert json.loads(body)["error"]["code"] == "too_many_connections"
