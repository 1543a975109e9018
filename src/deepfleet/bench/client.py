"""An async streaming OpenAI client that times what a user feels.

Timing follows vLLM's `vllm bench serve` (vllm/benchmarks/lib/endpoint_request_func.py): the
clock starts just before the POST; TTFT is the arrival of the first chunk that carries a choice;
each later choice chunk adds one inter-token latency; E2E ends at the last choice chunk (the
trailing usage chunk carries no token). Token counts come from the `usage` chunk that
`stream_options.include_usage` asks for.

One `aiohttp.ClientSession` with a pooled connector is shared by every request. aiohttp sets
TCP_NODELAY on each connection it opens (aiohttp/base_protocol.py), so small SSE chunks are not
delayed by Nagle's algorithm.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import aiohttp

Api = Literal["chat", "completions"]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload: a chat (messages) or a completion (prompt)."""

    messages: Sequence[Mapping[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 128
    # Ask the engine to produce exactly max_tokens (vLLM's `ignore_eos`), as benchmarks do.
    ignore_eos: bool = True
    # Sent as the OpenAI `user` field and the X-Session-Id header (session-affinity routing).
    session: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def api(self) -> Api:
        return "chat" if self.messages is not None else "completions"


@dataclass(frozen=True, slots=True)
class RequestResult:
    """What one request felt like from the client; times in seconds."""

    ok: bool
    error: str
    ttft_s: float
    itl_s: tuple[float, ...]
    e2e_s: float
    prompt_tokens: int
    output_tokens: int
    started_at: float

    @property
    def tpot_s(self) -> float:
        """vLLM's TPOT: (E2E - TTFT) / (output_tokens - 1); 0 for one-token outputs."""
        if self.output_tokens <= 1:
            return 0.0
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def build_payload(model: str, spec: RequestSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": spec.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if spec.messages is not None:
        body["messages"] = [dict(m) for m in spec.messages]
    else:
        body["prompt"] = spec.prompt or ""
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if spec.session is not None:
        body["user"] = spec.session
    body.update(spec.extra)
    return body


class OpenAIClient:
    """Sends streaming requests to one OpenAI-compatible base URL (e.g. http://host:8000)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        max_connections: int = 1024,
        timeout_s: float = 600.0,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OpenAIClient:
        self.session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_text(self, path: str) -> str:
        async with self.session().get(self.base_url + path) as response:
            response.raise_for_status()
            return await response.text()

    async def send(self, model: str, spec: RequestSpec) -> RequestResult:
        """Send one streaming request; never raises for HTTP or stream errors."""
        url = f"{self.base_url}/v1/{'chat/completions' if spec.api == 'chat' else 'completions'}"
        headers = {"X-Session-Id": spec.session} if spec.session else None
        timer = _StreamTimer(self._clock)
        try:
            async with self.session().post(
                url, json=build_payload(model, spec), headers=headers
            ) as response:
                if response.status != 200:
                    body = (await response.text())[:300]
                    return timer.failed(f"HTTP {response.status}: {body}")
                async for raw in response.content:
                    line = raw.strip()
                    if line.startswith(b"data:"):
                        timer.on_data(line[5:].strip())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return timer.failed(f"{type(exc).__name__}: {exc}")
        return timer.finish()


class _StreamTimer:
    """Accumulates one stream's chunk timings (vLLM's definitions)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.started_at = clock()
        self._last = self.started_at
        self._ttft = -1.0
        self._itl: list[float] = []
        self._prompt_tokens = 0
        self._output_tokens = -1
        self._error = ""

    def on_data(self, data: bytes) -> None:
        if data == b"[DONE]":
            return
        now = self._clock()
        chunk = json.loads(data)
        if "error" in chunk and not chunk.get("choices"):
            self._error = str(chunk["error"])[:300]
            return
        if chunk.get("choices"):
            if self._ttft < 0:
                self._ttft = now - self.started_at
            else:
                self._itl.append(now - self._last)
            self._last = now
        usage = chunk.get("usage")
        if usage:
            self._prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self._output_tokens = int(usage.get("completion_tokens") or 0)

    def failed(self, error: str) -> RequestResult:
        return RequestResult(
            ok=False,
            error=error,
            ttft_s=0.0,
            itl_s=(),
            e2e_s=self._clock() - self.started_at,
            prompt_tokens=0,
            output_tokens=0,
            started_at=self.started_at,
        )

    def finish(self) -> RequestResult:
        if self._error or self._ttft < 0:
            return self.failed(self._error or "no token chunk received")
        output_tokens = self._output_tokens if self._output_tokens >= 0 else len(self._itl) + 1
        return RequestResult(
            ok=True,
            error="",
            ttft_s=self._ttft,
            itl_s=tuple(self._itl),
            e2e_s=self._last - self.started_at,
            prompt_tokens=self._prompt_tokens,
            output_tokens=output_tokens,
            started_at=self.started_at,
        )
