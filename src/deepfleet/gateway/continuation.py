"""What a migrated stream already told its client, and how the next engine's stream is made to
look like the rest of the same stream.

The relay keeps the whole events it sent, as bytes, and nothing else (one list append per
read). Only when its engine fails are they parsed here (`sent_of`): the stream's id, object,
created and model, the text of its reasoning and answer parts, and token ids when the client
asked for them (`return_token_ids`). The continuation then runs on another replica, and
`Rewriter` turns each of its events into an event of the original stream: same id, created,
model and object (`chat.completion.chunk` or `text_completion`), reasoning and answer in their
own delta fields, usage counting the prompt once and every completion token once. Parsing per
event costs Python work, but only on a migrated stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CHAT_CHUNK = "chat.completion.chunk"
THINK_END = "</think>"
DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class Sent:
    """The stream so far, as its client saw it."""

    id: str = ""
    object: str = CHAT_CHUNK
    created: int = 0
    model: str = ""
    reasoning: str = ""
    content: str = ""
    token_ids: list[int] | None = None
    deltas: int = 0
    finished: bool = False
    usage_sent: bool = False
    reasoning_field: str = "reasoning"

    @property
    def chat(self) -> bool:
        return self.object == CHAT_CHUNK

    @property
    def thinking(self) -> bool:
        """The stream is inside R1's reasoning part (nothing of the answer came yet)."""
        return bool(self.reasoning) and not self.content

    def generated_text(self) -> str:
        """The engine's raw output so far: R1's parser splits it at `</think>`."""
        if self.reasoning:
            return self.reasoning + (THINK_END + self.content if self.content else "")
        return self.content


def events(data: bytes) -> list[bytes]:
    """The `data:` payloads of whole SSE events."""
    return [e[6:] for e in data.split(b"\n\n") if e.startswith(b"data: ")]


def sent_of(chunks: list[bytes]) -> Sent:
    sent = Sent()
    reasoning: list[str] = []
    content: list[str] = []
    ids: list[int] = []
    has_ids = False
    for payload in events(b"".join(chunks)):
        if payload == b"[DONE]":
            sent.finished = True
            continue
        try:
            obj = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(obj, dict) or "choices" not in obj:
            continue
        if not sent.id:
            sent.id = str(obj.get("id", ""))
            sent.object = str(obj.get("object", CHAT_CHUNK))
            sent.created = int(obj.get("created") or 0)
            sent.model = str(obj.get("model", ""))
        if obj.get("usage") and not obj["choices"]:
            sent.usage_sent = True
        for choice in obj["choices"][:1]:
            delta = choice.get("delta") or {}
            for name in ("reasoning_content", "reasoning"):
                if delta.get(name):
                    reasoning.append(delta[name])
                    sent.reasoning_field = name
            text = delta.get("content") if "delta" in choice else choice.get("text")
            if text:
                content.append(text)
            if choice.get("token_ids") is not None:
                has_ids = True
                ids.extend(choice["token_ids"])
            if reasoning or text:
                sent.deltas += 1
            if choice.get("finish_reason"):
                sent.finished = True
    sent.reasoning, sent.content = "".join(reasoning), "".join(content)
    sent.token_ids = ids if has_ids else None
    return sent


@dataclass
class Rewriter:
    """Events of a continuation stream -> events of the original stream.

    `source_chat`: the continuation is a chat stream (the text fallback) rather than a
    completions stream (the token continuation). `prompt_tokens`: the original prompt's size
    when known; else the continuation's prompt less `sent_tokens`.
    """

    sent: Sent
    source_chat: bool
    sent_tokens: int
    prompt_tokens: int | None
    client_usage: bool
    thinking: bool = False
    held: bytes = b""
    completion_tokens: int | None = field(default=None, init=False)

    def __call__(self, data: bytes) -> bytes:
        data = self.held + data
        cut = data.rfind(b"\n\n") + 2
        self.held = data[cut:] if cut > 1 else data
        if cut < 2:
            return b""
        out: list[bytes] = []
        for payload in events(data[:cut]):
            if payload == b"[DONE]":
                out.append(DONE)
                continue
            try:
                obj = json.loads(payload)
            except ValueError:
                continue
            event = self._event(obj) if isinstance(obj, dict) else None
            if event is not None:
                out.append(b"data: %s\n\n" % json.dumps(event, separators=(",", ":")).encode())
        return b"".join(out)

    def _event(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        if "choices" not in obj:
            return obj  # an error event: the client sees it as the engine wrote it
        sent = self.sent
        head = {"id": sent.id, "object": sent.object, "created": sent.created, "model": sent.model}
        usage = obj.get("usage")
        if not obj["choices"]:
            if not usage or not self.client_usage:
                return None
            return {**head, "choices": [], "usage": self._usage(usage)}
        choice = obj["choices"][0]
        finish = choice.get("finish_reason")
        if self.source_chat:
            delta = dict(choice.get("delta") or {})
            if delta.pop("role", None) is not None and not any(delta.values()) and not finish:
                return None
            text = str(delta.get("content") or "")
        else:
            text = str(choice.get("text") or "")
            delta = {}
        if not sent.chat:
            out = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            return {**head, "choices": [out]}
        if not self.source_chat:
            delta = self._split(text)
        if not any(delta.values()) and not finish:
            return None
        if not delta:
            delta = {"content": ""}
        choice_out = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice_out]}

    def _split(self, text: str) -> dict[str, Any]:
        """R1's parser, on the continuation's raw text: reasoning up to `</think>`."""
        if not self.thinking:
            return {"content": text} if text else {}
        before, end, after = text.partition(THINK_END)
        if end:
            self.thinking = False
        delta: dict[str, Any] = {}
        if before:
            delta[self.sent.reasoning_field] = before
        if after:
            delta["content"] = after
        return delta

    def _usage(self, usage: dict[str, Any]) -> dict[str, int]:
        completion = self.sent_tokens + int(usage.get("completion_tokens") or 0)
        prompt = self.prompt_tokens
        if prompt is None:
            prompt = max(int(usage.get("prompt_tokens") or 0) - self.sent_tokens, 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def ending(self) -> bytes:
        """The end of a stream that has nothing left to generate (its max_tokens was used)."""
        chunk = self._event({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
        return b"data: %s\n\n" % json.dumps(chunk, separators=(",", ":")).encode() + self.closing()

    def closing(self) -> bytes:
        """The end of a stream whose last token was already sent: usage if asked, [DONE]."""
        if self.sent.usage_sent or not self.client_usage:
            return DONE
        usage = {"prompt_tokens": self.prompt_tokens or 0, "completion_tokens": 0}
        sent = self.sent
        head = {"id": sent.id, "object": sent.object, "created": sent.created, "model": sent.model}
        tail = {**head, "choices": [], "usage": self._usage(usage)}
        return b"data: %s\n\n" % json.dumps(tail, separators=(",", ":")).encode() + DONE
