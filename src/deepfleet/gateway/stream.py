"""What the relay learns from an SSE stream without parsing it: bytes counts per read.

`bytes.count` and `in` run in C over each read, so counting costs a few scans of bytes that
are in the CPU cache anyway; only a read holding a usage event is parsed (once per stream).
Patterns that most streams never contain (reasoning, usage) are guarded by one `in` test. An
event split across two reads can be missed; the counts are for metrics and limits, and are
approximate by that much.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# Compact JSON (vLLM, SGLang) and json.dumps' default spacing.
REASONING = (
    b'"reasoning":"',
    b'"reasoning_content":"',
    b'"reasoning": "',
    b'"reasoning_content": "',
)
CONTENT = (b'"content":"', b'"content": "')
EVENT = b"data: "
USAGE = (b'"usage":{', b'"usage": {')


@dataclass
class StreamCounts:
    events: int = 0
    reasoning: int = 0
    content: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_at: float | None = None
    last_at: float | None = None

    def add(self, chunk: bytes) -> None:
        self.events += chunk.count(EVENT)
        if b'"reasoning' in chunk:
            self.reasoning += reasoning_in(chunk)
        self.content += chunk.count(CONTENT[0]) + chunk.count(CONTENT[1])
        if b'"usage"' in chunk and (USAGE[0] in chunk or USAGE[1] in chunk):
            self._usage(chunk)

    def _usage(self, chunk: bytes) -> None:
        for line in chunk.split(b"\n"):
            if line.startswith(EVENT) and any(p in line for p in USAGE):
                try:
                    usage = json.loads(line[len(EVENT) :])["usage"]
                    self.prompt_tokens = int(usage["prompt_tokens"])
                    self.completion_tokens = int(usage["completion_tokens"])
                except (ValueError, KeyError, TypeError):
                    continue

    @property
    def output_tokens(self) -> int:
        """From the usage event when the client asked for one, else one per delta event."""
        if self.completion_tokens is not None:
            return self.completion_tokens
        return self.reasoning + self.content


def reasoning_in(data: bytes) -> int:
    return sum(data.count(p) for p in REASONING)


def within_cap(chunk: bytes, allowed: int) -> bytes:
    """The whole events of `chunk` up to its `allowed`-th reasoning delta. Runs once per
    capped stream, so splitting into events here costs nothing on the hot path."""
    kept: list[bytes] = []
    for event in chunk.split(b"\n\n"):
        n = reasoning_in(event)
        if n > allowed:
            break
        allowed -= n
        if event:
            kept.append(event + b"\n\n")
    return b"".join(kept)


def capped_tail(model: str) -> bytes:
    """Ends a stream whose reasoning went over its cap: a finish_reason "length" chunk, then
    [DONE], as an engine does when it runs out of max_tokens."""
    chunk = {
        "id": "deepfleet-reasoning-cap",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
    }
    return f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()


def usage_of(body: bytes) -> tuple[int | None, int | None, float]:
    """(prompt, completion, reasoning share) from a non-streamed answer."""
    try:
        data = json.loads(body)
        usage = data.get("usage") or {}
        msg = (data.get("choices") or [{}])[0].get("message") or {}
    except (ValueError, AttributeError, IndexError):
        return None, None, 0.0
    thinking = len(msg.get("reasoning") or msg.get("reasoning_content") or "")
    answer = len(msg.get("content") or "")
    share = thinking / (thinking + answer) if thinking + answer else 0.0
    return usage.get("prompt_tokens"), usage.get("completion_tokens"), share


def cap_answer(body: bytes, cap: int, reasoning: int) -> bytes | None:
    """A non-streamed answer whose `reasoning` thinking tokens went over `cap`: its reasoning
    cut to about `cap` tokens (at the same share of its characters), no answer, finish_reason
    "length" and usage counting the capped tokens, as a capped stream ends. None when the body
    is not a chat answer."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        msg = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    for name in ("reasoning", "reasoning_content"):
        text = msg.get(name)
        if text:
            msg[name] = text[: len(text) * cap // max(reasoning, 1)]
    msg["content"] = None
    choice["finish_reason"] = "length"
    usage = data.get("usage")
    if isinstance(usage, dict) and "prompt_tokens" in usage:
        usage["completion_tokens"] = cap
        usage["total_tokens"] = int(usage["prompt_tokens"]) + cap
    return json.dumps(data, separators=(",", ":")).encode()
