"""Relay one engine stream to the client: the engine's bytes go out as they came, counted on
the way (stream.py), with an optional cap on reasoning, taking turns under load (turns.py).

The relay is an ASGI response that writes with the server's own `send` in one loop. It skips
StreamingResponse, the async generator and the task group per stream, because each of those
costs Python frames on every socket read, and under load the relay is bound by Python work
per read. A client's disconnect cancels the relay: the gateway's server protocol calls the
relay's hook (httpserver.py); elsewhere a small task waits on `receive()` for it. The relay's
`finally` then closes the engine connection, and vLLM aborts the request. Metrics are
observed off the path (later.py).

The relay sends whole SSE events only (a read that ends inside an event keeps that part for
the next read: one `endswith` per read) and keeps them in a list, so that when its engine
fails mid-stream the stream can go on on another replica (migration.py) and the client sees
one stream. That list append is all that migration costs per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from deepfleet.gateway.errors import sse_error
from deepfleet.gateway.httpserver import HOOKS, ConnectionHooks
from deepfleet.gateway.later import Later
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.migration import Continuation, Failed, Migrator
from deepfleet.gateway.stream import StreamCounts, capped_tail, within_cap
from deepfleet.gateway.turns import Turns
from deepfleet.gateway.upstream import ReplicaLost, UpstreamError, UpstreamResponse
from deepfleet.routing.base import Endpoint

STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
END = {"type": "http.response.body", "body": b"", "more_body": False}
EVENT_END = b"\n\n"


@dataclass(frozen=True)
class Outcome:
    """What a finished request reports back (for limits and metrics)."""

    status: str
    prompt_tokens: int | None
    output_tokens: int
    recorded: bool = False
    """Its usage is in the ledger already (`Commit` ran before its last bytes left)."""


Commit = Callable[[int | None, int], "asyncio.Future[None] | None"]
"""Queues a request's usage (prompt tokens, if the engine said; output tokens) in the ledger at
once, and returns a future of its commit, awaited (`committed`) before the answer's end is sent
(admission.py `committer`)."""

LEDGER_WAIT_S = 2.0


async def committed(fut: asyncio.Future[None] | None) -> None:
    """Wait for a usage line's commit, at most LEDGER_WAIT_S (then the answer goes on and the
    line is retried)."""
    if fut is not None and not fut.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), LEDGER_WAIT_S)


class StreamRelay:
    """The ASGI response of a streamed answer whose first bytes (`first`) already came."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        first: bytes,
        *,
        model: str,
        replica: str,
        started: float,
        reasoning_cap: int | None,
        metrics: GatewayMetrics,
        finish: Callable[[Outcome], None],
        turns: Turns,
        later: Later,
        path: str = "",
        body: bytes = b"",
        order: Sequence[Endpoint] = (),
        migrator: Migrator | None = None,
        moved: Callable[[str, str], None] | None = None,
        commit: Commit | None = None,
    ) -> None:
        self.commit = commit
        self.recorded = False
        self.path = path
        self.body = body
        self.order = order
        self.migrator = migrator
        self.moved = moved
        self.sent_chunks: list[bytes] = []
        self.turns = turns
        self.later = later
        self.upstream = upstream
        self.first = first
        self.model = model
        self.replica = replica
        self.started = started
        self.cap = reasoning_cap
        self.mm = metrics.of(model)
        self.finish = finish
        self.counts = StreamCounts()
        self.client_gone = False
        self.status = "499"  # until the end is sent: the client went away

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        hooks: ConnectionHooks | None = scope.get("extensions", {}).get(HOOKS)
        watcher: asyncio.Future[None] | None = None
        try:
            if hooks is not None:
                hooks.watch(lambda: self._gone(task))
                hooks.hold_head()  # the head leaves with the first chunk: one write
            else:
                watcher = asyncio.ensure_future(self._watch(receive, task))
            content_type = self.upstream.headers.get(b"content-type", b"text/event-stream")
            headers = [(b"content-type", content_type), *STREAM_HEADERS]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if self.migrator is not None and self.migrator.limit(self.model) > 0:
                self.upstream.conn.set_read_timeout(self.migrator.stall_timeout_s)
            self.turns.active += 1
            try:
                await self._pump(send)
            finally:
                self.turns.active -= 1
        except asyncio.CancelledError:
            if not self.client_gone:
                raise
            task.uncancel()  # our own cancel: a normal end for the server
        finally:
            if hooks is not None:
                hooks.watch(None)
            elif watcher is not None:
                watcher.cancel()
            self.upstream.close()  # before the answer's end: vLLM aborts the request
            self._report()

    async def _pump(self, send: Send) -> None:
        counts, cap, turns, mm = self.counts, self.cap, self.turns, self.mm
        counts.first_at = time.perf_counter()
        self.later.add(mm.ttft.observe, counts.first_at - self.started)
        upstream = self.upstream
        read = upstream.read
        sent = self.sent_chunks
        chunk = self.first
        held = b""
        try:
            while chunk:
                counts.last_at = time.perf_counter()
                if held:
                    chunk, held = held + chunk, b""
                if not chunk.endswith(EVENT_END):  # keep a partial event for the next read
                    cut = chunk.rfind(EVENT_END) + 2
                    if cut < 2:
                        held, chunk = chunk, await read()
                        continue
                    chunk, held = chunk[:cut], chunk[cut:]
                before = counts.reasoning
                counts.add(chunk)
                if cap is not None and counts.reasoning > cap:
                    await self._cap(send, chunk, before)
                    return
                if upstream.ended:  # the last bytes and the answer's end leave in one write
                    self.status = "200"
                    body = chunk + held
                    sent.append(body)
                    if self.commit is not None:
                        await self._commit()
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent.append(chunk)
                turn = turns.wait()
                if turn is not None:
                    await turn
                chunk = await read()
        except (UpstreamError, TimeoutError) as exc:
            await self._failed(send, exc)
            return
        self.status = "200"
        if self.commit is not None:
            await self._commit()
        await send({"type": "http.response.body", "body": held, "more_body": False})

    async def _commit(self) -> None:
        """The usage into the ledger before the answer's end leaves: a client that got the
        whole answer is billed for it even if this gateway is SIGKILLed the next moment."""
        assert self.commit is not None
        counts = self.counts
        counts.usage_from(self.sent_chunks[-2:])
        self.recorded = True
        await committed(self.commit(counts.prompt_tokens, counts.output_tokens))

    async def _cap(self, send: Send, chunk: bytes, before: int) -> None:
        assert self.cap is not None
        self.mm.reasoning_capped.inc()
        self.counts.reasoning = self.cap
        tail = within_cap(chunk, self.cap - before) + capped_tail(self.model)
        self.status = "200"
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _failed(self, send: Send, exc: BaseException) -> None:
        """The engine failed mid-stream: go on elsewhere while the model's limit allows."""
        migrator = self.migrator
        limit = migrator.limit(self.model) if migrator is not None else 0
        failed: Failed = {}
        moves = 0
        while migrator is not None and moves < limit:
            moves += 1
            reason = _reason(exc)
            migrator.failed_on(failed, self.replica)
            self.upstream.close()
            cont = await migrator.resume(self, reason, failed)
            if cont is None:
                break
            last = self.counts.last_at or self.counts.first_at or self.started
            self.later.add(self.mm.migration_gap.observe, time.perf_counter() - last)
            if self.moved is not None:
                self.moved(self.replica, cont.replica)
            self.replica = cont.replica
            try:
                await self._continue(send, cont)
                return
            except (UpstreamError, TimeoutError) as again:
                exc = again
        body = sse_error(f"replica {self.replica} failed mid-stream: {type(exc).__name__}")
        self.status = "502"
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _continue(self, send: Send, cont: Continuation) -> None:
        """Relay a continuation (rewritten into this stream's events) to the end."""
        counts, cap, sent = self.counts, self.cap, self.sent_chunks
        upstream = cont.upstream
        if upstream is not None:
            self.upstream = upstream  # closed by __call__'s finally
        out = cont.first
        while True:
            if out:
                counts.last_at = time.perf_counter()
                before = counts.reasoning
                counts.add(out)
                if cap is not None and counts.reasoning > cap:
                    await self._cap(send, out, before)
                    return
                await send({"type": "http.response.body", "body": out, "more_body": True})
                sent.append(out)
            if upstream is None:
                break
            raw = await upstream.read()
            if not raw:
                break
            out = cont.rewrite(raw)
        self.status = "200"
        if self.commit is not None:
            await self._commit()
        await send(END)

    async def _watch(self, receive: Receive, task: asyncio.Task[None]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._gone(task)

    def _gone(self, task: asyncio.Task[None]) -> None:
        self.client_gone = True
        task.cancel()

    def _report(self) -> None:
        counts = self.counts
        counts.usage_from(self.sent_chunks[-2:])  # the usage event is the last before [DONE]
        outcome = Outcome(self.status, counts.prompt_tokens, counts.output_tokens, self.recorded)
        self.finish(outcome)
        self.later.add(self._observe)

    def _observe(self) -> None:
        mm, counts = self.mm, self.counts
        if counts.first_at is not None and counts.last_at is not None and counts.events > 2:
            mm.itl.observe((counts.last_at - counts.first_at) / (counts.events - 2))
        if counts.reasoning or counts.content:
            mm.reasoning_tokens.observe(counts.reasoning)
            mm.answer_tokens.observe(counts.content)


def _reason(exc: BaseException) -> str:
    """The migration's metric label (docs/migration.md)."""
    if isinstance(exc, TimeoutError):
        return "stall"
    return "lost" if isinstance(exc, ReplicaLost) else "disconnect"
