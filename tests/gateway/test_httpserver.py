"""The server protocol sends a streamed answer's head and first chunk in one write, and a relay
sends its last bytes with the answer's end."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from deepfleet.gateway.httpserver import ConnectionHooks, HeadHoldingTransport
from deepfleet.gateway.later import Later
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.relay import Outcome, StreamRelay
from deepfleet.gateway.turns import Turns
from deepfleet.gateway.upstream import UpstreamResponse
from tests.gateway.conftest import MODEL, Rig


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def holding() -> tuple[HeadHoldingTransport, Recorder]:
    rec = Recorder()
    return HeadHoldingTransport(cast(Any, rec), asyncio.get_running_loop()), rec


async def test_a_held_head_leaves_with_the_next_write() -> None:
    t, rec = holding()
    t.hold_next()
    t.write(b"HEAD")
    t.write(b"BODY")
    t.write(b"MORE")
    assert rec.writes == [b"HEADBODY", b"MORE"]
    await asyncio.sleep(0)  # the safety flush finds nothing held
    assert rec.writes == [b"HEADBODY", b"MORE"]


async def test_a_held_head_without_a_body_leaves_alone_next_iteration() -> None:
    t, rec = holding()
    t.hold_next()
    t.write(b"HEAD")
    assert rec.writes == []
    await asyncio.sleep(0)
    assert rec.writes == [b"HEAD"]


async def test_close_sends_a_held_head_first() -> None:
    t, rec = holding()
    t.hold_next()
    t.write(b"HEAD")
    t.close()
    assert rec.writes == [b"HEAD"] and rec.closed


async def test_without_hold_writes_pass_through() -> None:
    t, rec = holding()
    t.write(b"A")
    t.write(b"B")
    assert rec.writes == [b"A", b"B"]


async def test_hooks_call_the_watcher_once_when_the_connection_is_lost() -> None:
    t, _ = holding()
    hooks, calls = ConnectionHooks(t), []
    hooks.watch(lambda: calls.append("first"))
    hooks.watch(None)  # that answer ended
    hooks.watch(lambda: calls.append("second"))
    hooks.connection_lost()
    hooks.connection_lost()
    assert calls == ["second"]
    hooks.watch(lambda: calls.append("late"))  # registered after the loss: called at once
    assert calls == ["second", "late"]


async def test_first_read_of_a_stream_holds_head_and_first_event(rig: Rig) -> None:
    host, port = rig.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    first = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert b"data: " in first  # the head did not leave alone


class FakeUpstream:
    """Two reads of engine bytes, the second one the answer's last."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.left = [b'data: {"choices":[{"delta":{"content":"b"}}]}\n\ndata: [DONE]\n\n']
        self.closed = False

    @property
    def ended(self) -> bool:
        return not self.left

    async def read(self) -> bytes:
        return self.left.pop(0) if self.left else b""

    def close(self) -> None:
        self.closed = True


async def test_relay_sends_the_last_bytes_with_the_end() -> None:
    upstream = FakeUpstream()
    outcomes: list[Outcome] = []
    relay = StreamRelay(
        cast(UpstreamResponse, upstream),
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n',
        model=MODEL,
        replica="r0",
        started=0.0,
        reasoning_cap=None,
        metrics=GatewayMetrics(),
        finish=outcomes.append,
        turns=Turns(),
        later=Later(),
    )
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        await asyncio.Event().wait()

    await relay({"type": "http"}, receive, send)
    bodies = [(m["body"], m["more_body"]) for m in sent[1:]]
    assert bodies == [
        (b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', True),
        (b'data: {"choices":[{"delta":{"content":"b"}}]}\n\ndata: [DONE]\n\n', False),
    ]
    assert upstream.closed
    assert [o.status for o in outcomes] == ["200"]
    assert outcomes[0].output_tokens == 2
