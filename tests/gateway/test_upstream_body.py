"""The engine client's body path (upstream.py): the parser appends each HTTP chunk straight to
the connection's list (no Python frame per SSE event), the reader is woken once per socket
read, and reading still pauses above the high-water mark and resumes on `read()`."""

from __future__ import annotations

import asyncio

import pytest

from deepfleet.gateway import upstream as up
from deepfleet.gateway.upstream import UpstreamPool

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(answer: list[bytes]) -> tuple[asyncio.Server, int]:
    """A server that reads one request and writes each item of `answer` with a pause between
    (one socket read each on the client), then keeps the connection open."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for part in answer:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_chunks_of_one_read_come_whole_and_in_order() -> None:
    events = [b'data: {"n":%d}\n\n' % i for i in range(50)]
    second = [b"data: [DONE]\n\n"]
    answer = [HEAD + b"".join(chunk(e) for e in events), chunk(second[0]) + b"0\r\n\r\n"]
    server, port = await serve(answer)
    pool = UpstreamPool(5.0, 5.0)
    try:
        resp = await pool.post(f"http://127.0.0.1:{port}", "/v1/chat/completions", b"{}")
        assert resp.status == 200
        first = await resp.read()
        assert first == b"".join(events)  # 50 chunks of one socket read: one read() result
        rest = await resp.read()
        assert rest == second[0]
        assert resp.ended
        assert await resp.read() == b""
        # The connection went back to the pool, its list empty and still the parser's.
        conn = pool.idle[("127.0.0.1", port)][0]
        assert conn.buf == [] and conn.on_body == conn.buf.append
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


async def test_reading_pauses_above_the_high_water_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(up, "HIGH_WATER", 1000)
    big = b"data: " + b"x" * 1500 + b"\n\n"
    answer = [HEAD + chunk(big), chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"]
    server, port = await serve(answer)
    pool = UpstreamPool(5.0, 5.0)
    try:
        resp = await pool.post(f"http://127.0.0.1:{port}", "/v1/chat/completions", b"{}")
        conn = resp.conn
        for _ in range(100):  # the body arrives without anyone reading it
            if conn.buf:
                break
            await asyncio.sleep(0.01)
        assert conn.paused and conn.size > 1000
        assert await resp.read() == big
        assert not conn.paused and conn.size == 0
        assert await resp.read() == b"data: [DONE]\n\n"
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
