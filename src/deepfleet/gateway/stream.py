"""What the relay learns from an SSE stream without parsing it: bytes counts per read.

`bytes.count` and `in` run in C over each read, but each is a pass over the read's bytes, and
with a fast engine these passes were 15% of the gateway's CPU (overhead benchmark, 32 streams),
so a read gets three: the events, the answer deltas, and one `in` test for reasoning (rare;
counted only when present). The answer's pattern depends on the engine's JSON spacing
(compact for vLLM and SGLang, `json.dumps` spacing elsewhere): both are counted until the
stream shows which one its engine writes, then only that one. The usage event is not looked
for per read: it is the last event before [DONE], so `usage_from` parses it once, from the
stream's last chunks, at the end. An event split across two reads can be missed; the counts
are for metrics and limits, and are approximate by that much (the relay sends whole events,
so this does not happen there).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
EVENT_END = b"\n\n"
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
    spacing: bytes | None = None
    """The answer pattern of this stream's JSON spacing, once a read showed one alone."""
    mixed: bool = False
    """A read showed both spacings: both are counted to the end."""

    def add(self, chunk: bytes) -> None:
        self.events += chunk.count(EVENT)
        if b'"reasoning' in chunk:
            self.reasoning += reasoning_in(chunk)
        if self.spacing is not None:
            self.content += chunk.count(self.spacing)
            return
        compact, spaced = chunk.count(CONTENT[0]), chunk.count(CONTENT[1])
        self.content += compact + spaced
        if self.mixed or not (compact or spaced):
            return
        if compact and spaced:
            self.mixed = True
        else:
            self.spacing = CONTENT[0] if compact else CONTENT[1]

    def usage_from(self, last: Sequence[bytes]) -> None:
        """The usage event's tokens, from the stream's last chunks (whole events). It is one
        of the stream's last two events (then [DONE]; with vLLM's continuous usage stats the
        last delta has one too), so only those are looked at, from the end (`rfind` of the
        blank line that ends each event: JSON text holds no raw newline)."""
        left = 2
        for chunk in reversed(last):
            end = len(chunk)
            while left and end > 0:
                stop = end - 2 if chunk.endswith(EVENT_END, 0, end) else end
                cut = chunk.rfind(EVENT_END, 0, stop)
                start = 0 if cut < 0 else cut + 2
                line, end = chunk[start:stop], start
                if not line:
                    continue
                left -= 1
                if line.startswith(EVENT) and b'"usage"' in line and self._usage(line):
                    return
            if not left:
                return

    def _usage(self, line: bytes) -> bool:
        if not any(p in line for p in USAGE):
            return False
        try:
            usage = json.loads(line[len(EVENT) :])["usage"]
            prompt = int(usage["prompt_tokens"])
            completion = int(usage["completion_tokens"])
        except (ValueError, KeyError, TypeError):
            return False
        self.prompt_tokens, self.completion_tokens = prompt, completion
        return True

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
