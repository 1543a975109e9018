"""Request -> prompt tokens, as the engine will see them: the model's chat template rendered the
way Hugging Face's `apply_chat_template` does (which vLLM calls), then its tokenizer.json.

A conversation's later turns repeat its earlier ones, so the last prompt of each conversation
is kept (text and token ids) and a new turn re-tokenizes only what follows the last added
token (e.g. `<|im_end|>`) inside the unchanged part: the tokenizer splits text at added tokens
before anything else, so the tokens up to that point cannot change. Prompts are kept under
their conversation (messages up to the first user message) and under their system prompt
alone, so a new conversation reuses a system prompt others share. Bounded in tokens.
"""

from __future__ import annotations

import hashlib
import json
import threading
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import msgspec
from jinja2.sandbox import ImmutableSandboxedEnvironment

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatBody(msgspec.Struct):
    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionBody(msgspec.Struct):
    prompt: str | list[Any]


_chat = msgspec.json.Decoder(ChatBody)
_completion = msgspec.json.Decoder(CompletionBody)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def message_text(content: Any) -> Any:
    """OpenAI content parts -> one string, as vLLM's "string" content format joins them."""
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return content


@dataclass(frozen=True, slots=True)
class Prompt:
    tokens: Sequence[int]
    cached_tokens: int  # tokens reused from the conversation's previous turn


@dataclass(slots=True)
class _Turn:
    text: str
    ids: array[int]
    cuts: array[int]  # (token count, text end) pairs after each safe added token, flattened


class ModelTokenizer:
    """One model's chat template and tokenizer; thread-safe, loaded once."""

    def __init__(self, folder: Path, max_cached_tokens: int = 4_000_000) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = _json(folder / "tokenizer_config.json")
        self._specials = {
            k: v if isinstance(v, str) else v.get("content", "")
            for k, v in config.items()
            if k.endswith("_token") and isinstance(v, str | dict)
        }
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(_chat_template(folder, config))
        # Added tokens that do not swallow the whitespace after them: a safe place to cut.
        self._safe = {
            i
            for i, t in self._tokenizer.get_added_tokens_decoder().items()
            if not getattr(t, "rstrip", False)
        }
        self._turns: OrderedDict[bytes, _Turn] = OrderedDict()
        self._cached = 0
        self.max_cached_tokens = max_cached_tokens
        self._lock = threading.Lock()

    def render(self, body: ChatBody) -> str:
        messages = [{**m, "content": message_text(m.get("content"))} for m in body.messages]
        kwargs = {**self._specials, **(body.chat_template_kwargs or {})}
        text = self._template.render(
            messages=messages,
            add_generation_prompt=body.add_generation_prompt and not body.continue_final_message,
            **kwargs,
        )
        if body.continue_final_message and messages:
            last = str(messages[-1].get("content") or "")
            end = text.rfind(last)
            if last and end >= 0:
                text = text[: end + len(last)]
        return text

    def chat(self, body: ChatBody) -> Prompt:
        text = self.render(body)
        keys = _conversation_keys(body.messages)
        turn = None
        with self._lock:
            for key in keys:
                turn = self._turns.get(key)
                if turn is not None:
                    self._turns.move_to_end(key)
                    break
        keep_tokens, keep_chars = (0, 0) if turn is None else _reusable(turn, text)
        head = turn.ids[:keep_tokens] if turn is not None else array("i")
        encoding = self._tokenizer.encode(text[keep_chars:], add_special_tokens=False)
        ids = array("i", head)
        ids.extend(encoding.ids)
        cuts = _cuts(turn, keep_tokens) if turn is not None else array("i")
        for position, (token, (_, end)) in enumerate(
            zip(encoding.ids, encoding.offsets, strict=True)
        ):
            if token in self._safe:
                cuts.extend((keep_tokens + position + 1, keep_chars + end))
        latest = _Turn(text, ids, cuts)
        for key in keys:
            self._remember(key, latest)
        return Prompt(ids, keep_tokens)

    def completion(self, body: CompletionBody) -> Prompt | None:
        prompt = body.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return Prompt(self._tokenizer.encode(prompt, add_special_tokens=True).ids, 0)
        if prompt and all(isinstance(t, int) for t in prompt):
            return Prompt(prompt, 0)
        return None  # a batch of prompts: several requests in one, not routed by prefix

    def _remember(self, key: bytes, turn: _Turn) -> None:
        with self._lock:
            old = self._turns.pop(key, None)
            if old is not None:
                self._cached -= len(old.ids)
            self._turns[key] = turn
            self._cached += len(turn.ids)
            while self._cached > self.max_cached_tokens and self._turns:
                _, dropped = self._turns.popitem(last=False)
                self._cached -= len(dropped.ids)


def decode_chat(body: bytes) -> ChatBody:
    return _chat.decode(body)


def decode_completion(body: bytes) -> CompletionBody:
    return _completion.decode(body)


def _reusable(turn: _Turn, text: str) -> tuple[int, int]:
    """(tokens, chars) of the previous turn to keep: up to the last safe cut inside the part of
    its text that the new text repeats."""
    common = _common_prefix(turn.text, text)
    cuts = turn.cuts
    best = (0, 0)
    for i in range(0, len(cuts), 2):
        if cuts[i + 1] > common:
            break
        best = (cuts[i], cuts[i + 1])
    return best


def _cuts(turn: _Turn, keep_tokens: int) -> array[int]:
    out = array("i")
    for i in range(0, len(turn.cuts), 2):
        if turn.cuts[i] > keep_tokens:
            break
        out.extend((turn.cuts[i], turn.cuts[i + 1]))
    return out


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by bisection over slice comparisons (memcmp speed)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _conversation_keys(messages: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """The conversation (messages up to its first user message), then its system prompt
    alone (messages before that), so a new conversation reuses a shared system prompt."""
    end = next((i for i, m in enumerate(messages) if m.get("role") == "user"), 0)
    keys = [msgspec.json.encode(messages[: end + 1])]
    if end > 0:
        keys.append(msgspec.json.encode(messages[:end]))
    return [hashlib.blake2b(k, digest_size=16).digest() for k in keys]


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _chat_template(folder: Path, config: Mapping[str, Any]) -> str:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = config.get("chat_template")
    if isinstance(template, str):
        return template
    if isinstance(template, list):  # named templates: take the default one
        for item in template:
            if isinstance(item, dict) and item.get("name") == "default":
                return str(item.get("template", CHATML))
    return CHATML
