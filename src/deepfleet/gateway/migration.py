"""Mid-stream migration: a stream whose engine failed goes on, on another ready replica.

When the engine serving a stream resets or closes the connection before the stream's end,
stays silent past the stall deadline (`stall_timeout_s`) after bytes went out, or the fleet
state shows it lost (lost.py: the migrator cuts its connections), the relay asks
`Migrator.resume` for a continuation: the next ready replica of the model (in the router's
order, minus the replicas that failed this request) is asked to go on from what the client
already got, and the relay sends its events, rewritten by continuation.py, as the rest of the
same stream. Each stream may move `migration_limit` times (the model's, else the gateway's);
after that, or when nothing can continue it, the stream ends with an SSE error event as before.

With no other replica ready (the others dead, restarting or failed this request), the stream
waits for one up to the model's `queue_timeout_s`, as a new request would: a replica that
failed this request counts again once it has restarted (a new process). A client that leaves
ends the wait.

How a stream continues:
- With the model's tokenizer (the fleet state names a folder): at the token level. The prompt
  is rendered with the model's chat template and tokenized as the engine does
  (kvcache/tokenize.py); the tokens sent so far are the ids the engine returned when the client
  asked for `return_token_ids`, else the sent text tokenized again. The continuation is a
  `/v1/completions` request whose prompt is those token ids, with the same sampling fields and
  seed and `max_tokens` less what was sent. A greedy stream then continues exactly, as long as
  the re-tokenized text gives the ids the engine had produced (it does for ordinary text).
- Without one: at the text level, a chat request that continues the partial assistant message
  (`continue_final_message`), or a completion of the prompt plus the text sent.
Sampled streams continue with the same distribution, not the same tokens. Requests the gateway
cannot rebuild (n > 1, tools, logprobs, echo) are not migrated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from deepfleet.fleet.state import FleetState
from deepfleet.gateway.continuation import Rewriter, Sent, sent_of
from deepfleet.gateway.lost import lost, serving
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from deepfleet.kvcache.tokenize import ChatBody, ModelTokenizer
from deepfleet.routing.base import Endpoint
from deepfleet.routing.endpoints import WAIT_POLL_S, EndpointTable

log = logging.getLogger(__name__)

# Fields a continuation keeps as the client sent them.
SAMPLING = (
    "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "ignore_eos",
    "min_tokens", "skip_special_tokens", "spaces_between_special_tokens", "user",
)  # fmt: skip
NOT_MIGRATED = ("tools", "functions", "logprobs", "top_logprobs", "echo", "response_format")


class Migrating(Protocol):
    """What the relay tells the migrator about its stream."""

    model: str
    replica: str
    path: str
    body: bytes
    order: Sequence[Endpoint]
    sent_chunks: list[bytes]
    client_gone: bool


Failed = dict[str, int]
"""Replicas that failed a stream, each with its restart count then (see `Migrator.failed_on`)."""


@dataclass(slots=True)
class Continuation:
    upstream: UpstreamResponse | None
    """None: nothing more to read (the stream had already used its max_tokens)."""
    replica: str
    rewrite: Rewriter
    first: bytes
    """The continuation's first events, already rewritten (may be b"")."""


class Migrator:
    def __init__(
        self,
        table: EndpointTable,
        pool: UpstreamPool,
        metrics: GatewayMetrics,
        limit: int,
        stall_timeout_s: float,
    ) -> None:
        self.table = table
        self.pool = pool
        self.metrics = metrics
        self.default_limit = limit
        self.stall_timeout_s = stall_timeout_s
        self._tokenizers: dict[str, asyncio.Future[_Tokenizers | None]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._serving: dict[str, str] = {}
        table.follower.listen(self._on_state)

    def _on_state(self, state: FleetState) -> None:
        """Cut the connections to replicas the new state shows lost (lost.py)."""
        for replica_id, url in lost(self._serving, state).items():
            cut = self.pool.lose(url, f"replica {replica_id} is lost (fleet state)")
            if cut:
                log.info("replica %s lost: %d request(s) move to another replica", replica_id, cut)
        self._serving = serving(state)

    def limit(self, model: str) -> int:
        state = self.table.follower.state
        if state is not None:
            for m in state.models:
                if m.name == model:
                    own = m.migration_limit
                    return self.default_limit if own is None else own
        return self.default_limit

    def failed_on(self, failed: Failed, replica: str) -> None:
        """Record that `replica` failed the stream (until it restarts)."""
        failed[replica] = self.table.restarts_of(replica)

    def _fresh(self, ep: Endpoint, failed: Failed) -> bool:
        at = failed.get(ep.replica_id)
        return at is None or self.table.restarts_of(ep.replica_id) != at

    async def resume(self, stream: Migrating, reason: str, failed: Failed) -> Continuation | None:
        """A continuation of `stream` on another replica, or None when none can go on."""
        try:
            body = json.loads(stream.body)
        except ValueError:
            return None
        if not isinstance(body, dict) or int(body.get("n") or 1) != 1:
            return None
        if any(body.get(k) for k in NOT_MIGRATED):
            return None
        sent = sent_of(stream.sent_chunks)
        plan = await self._plan(stream, body, sent)
        if plan is None:
            return None
        path, request, rewrite, left = plan
        self.metrics.migrations.labels(stream.model, reason).inc()
        if sent.finished:
            return Continuation(None, stream.replica, rewrite, rewrite.closing())
        if left is not None and left <= 0:
            return Continuation(None, stream.replica, rewrite, rewrite.ending())
        data = json.dumps(request, separators=(",", ":")).encode()
        return await self._post(stream, path, data, rewrite, failed)

    async def _post(
        self, stream: Migrating, path: str, data: bytes, rewrite: Rewriter, failed: Failed
    ) -> Continuation | None:
        """The continuation on the first replica that takes it; waits for one to become ready
        (up to the model's queue timeout) when none can take it now."""
        deadline = time.monotonic() + self.table.queue_timeout_s(stream.model)
        while True:
            cont = await self._post_ready(stream, path, data, rewrite, failed)
            if cont is not None or not await self._wait_fresh(stream, failed, deadline):
                return cont

    async def _wait_fresh(self, stream: Migrating, failed: Failed, deadline: float) -> bool:
        """Until a replica that has not failed this stream is ready: False at the deadline,
        when the client left, or when no replica of the model is coming any more."""
        table = self.table
        waiting = False
        try:
            while True:
                ready = table.ready(stream.model)
                for ep in ready:  # only looking: half-open probes stay on offer
                    table.release_probe(ep.replica_id)
                if any(self._fresh(ep, failed) for ep in ready):
                    return True
                if (
                    stream.client_gone
                    or time.monotonic() >= deadline
                    or not table.may_become_ready(stream.model)
                ):
                    return False
                if not waiting:
                    waiting = True
                    self.metrics.waiting_for_replica.labels(stream.model).inc()
                await asyncio.sleep(WAIT_POLL_S)
        finally:
            if waiting:
                self.metrics.waiting_for_replica.labels(stream.model).dec()

    async def _post_ready(
        self, stream: Migrating, path: str, data: bytes, rewrite: Rewriter, failed: Failed
    ) -> Continuation | None:
        ranks = {ep.replica_id: i for i, ep in enumerate(stream.order)}
        ready = self.table.ready(stream.model)
        candidates = sorted(
            (ep for ep in ready if self._fresh(ep, failed)),
            key=lambda ep: ranks.get(ep.replica_id, len(ranks)),
        )
        tried: set[str] = set()
        try:
            for ep in candidates:
                tried.add(ep.replica_id)
                self.failed_on(failed, ep.replica_id)
                try:
                    upstream = await self.pool.post(ep.url, path, data)
                    if upstream.status != 200:
                        upstream.close()
                        continue
                    upstream.conn.set_read_timeout(self.stall_timeout_s)
                    first = b""
                    while not first:  # the first whole events, rewritten
                        raw = await upstream.read()
                        if not raw:
                            break
                        first = rewrite(raw)
                except (UpstreamError, TimeoutError):
                    self.table.eject(ep.replica_id)
                    continue
                if not first:
                    continue
                self.table.succeeded(ep.replica_id)
                return Continuation(upstream, ep.replica_id, rewrite, first)
        finally:
            for ep in ready:
                if ep.replica_id not in tried:
                    self.table.release_probe(ep.replica_id)
        return None

    async def _plan(
        self, stream: Migrating, body: dict[str, Any], sent: Sent
    ) -> tuple[str, dict[str, Any], Rewriter, int | None] | None:
        chat = stream.path.endswith("/chat/completions")
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        request: dict[str, Any] = {k: body[k] for k in SAMPLING if k in body}
        request.update(model=body.get("model"), stream=True)
        request["stream_options"] = {"include_usage": True}
        tok = await self._tokenizer(stream.model)
        prompt_ids: list[int] | None = None
        generated: list[int] | None = sent.token_ids
        if tok is not None:
            prompt_ids = await self._run(tok.prompt_ids, chat, body)
            if prompt_ids is not None and generated is None:
                generated = await self._run(tok.encode, sent.generated_text())
        sent_tokens = len(generated) if generated is not None else sent.deltas
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        left = int(cap) - sent_tokens if cap else None
        if left is not None:
            request["max_tokens"] = max(left, 1)
        if prompt_ids is not None and generated is not None:
            request["prompt"] = prompt_ids + generated
            rewrite = Rewriter(sent, False, sent_tokens, len(prompt_ids), usage, sent.thinking)
            return "/v1/completions", request, rewrite, left
        if sent.reasoning:
            return None  # R1's reasoning cannot go back into a chat template as text
        if chat:
            messages = [*body.get("messages", []), {"role": "assistant", "content": sent.content}]
            request.update(
                messages=messages, continue_final_message=True, add_generation_prompt=False
            )
            if body.get("chat_template_kwargs"):
                request["chat_template_kwargs"] = body["chat_template_kwargs"]
            return stream.path, request, Rewriter(sent, True, sent_tokens, None, usage), left
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            return None
        request["prompt"] = prompt + sent.content
        return stream.path, request, Rewriter(sent, False, sent_tokens, None, usage), left

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="migrate-tokenize")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except Exception:
            log.debug("cannot tokenize for a migration", exc_info=True)
            return None

    async def _tokenizer(self, model: str) -> _Tokenizers | None:
        state = self.table.follower.state
        models = state.models if state is not None else []
        folder = next((m.tokenizer for m in models if m.name == model), None)
        if not folder:
            return None
        future = self._tokenizers.get(folder)
        if future is None:
            future = self._tokenizers[folder] = asyncio.ensure_future(
                self._run(_Tokenizers, Path(folder))
            )
        result: _Tokenizers | None = await future
        return result

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class _Tokenizers:
    """The model's chat template and tokenizer (kvcache/tokenize.py) and its plain encoder."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.model = ModelTokenizer(folder, max_cached_tokens=0)
        self.plain = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def prompt_ids(self, chat: bool, body: dict[str, Any]) -> list[int] | None:
        if chat:
            chat_body = ChatBody(
                messages=body["messages"],
                add_generation_prompt=bool(body.get("add_generation_prompt", True)),
                continue_final_message=bool(body.get("continue_final_message", False)),
                chat_template_kwargs=body.get("chat_template_kwargs"),
            )
            return list(self.model.chat(chat_body).tokens)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, str):
            return list(self.plain.encode(prompt, add_special_tokens=True).ids)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        return None

    def encode(self, text: str) -> list[int]:
        return list(self.plain.encode(text, add_special_tokens=False).ids)
