"""Tokenizers for the simulator: the model's real one (a Hugging Face tokenizer.json, with its
chat template) when a model folder is given, else a fast deterministic word-level one.

The fast tokenizer makes one token of each word or punctuation mark (with its leading space)
and maps it to a stable id, so equal text gives equal ids in every process and the prefix
cache and KV events behave as with a real tokenizer.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_PIECES = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")
_RESERVED = 256


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_id: int) -> str: ...

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str: ...


def _render(template: str, messages: Sequence[Mapping[str, Any]]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=False)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def message_text(content: Any) -> str:
    """OpenAI message content: a string or a list of parts; the text parts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class FastTokenizer:
    """Word-level, deterministic, no files needed."""

    def __init__(self, vocab_size: int = 49152) -> None:
        self.vocab_size = vocab_size
        self._text: dict[int, str] = {}

    def encode(self, text: str) -> list[int]:
        span = self.vocab_size - _RESERVED
        ids = []
        for piece in _PIECES.findall(text):
            token = _RESERVED + zlib.crc32(piece.encode()) % span
            self._text.setdefault(token, piece)
            ids.append(token)
        return ids

    def decode(self, token_id: int) -> str:
        return self._text.get(token_id, "")

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        return (
            "".join(
                f"<|im_start|>{m.get('role', 'user')}\n{message_text(m.get('content'))}<|im_end|>\n"
                for m in messages
            )
            + "<|im_start|>assistant\n"
        )


class HfTokenizer:
    """A Hugging Face fast tokenizer (tokenizer.json) and the folder's chat template."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        self._tokenizer = RustTokenizer.from_file(str(folder / "tokenizer.json"))
        self._template = _chat_template(folder)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, token_id: int) -> str:
        return str(self._tokenizer.decode([token_id], skip_special_tokens=False))

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        plain = [{**m, "content": message_text(m.get("content"))} for m in messages]
        return _render(self._template, plain)


def _chat_template(folder: Path) -> str:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, str):
            return template
    return CHATML


@functools.lru_cache(maxsize=8)
def load_tokenizer(folder: str | None) -> Tokenizer:
    """The real tokenizer of a model folder (shared by every engine in the process), or the
    fast one when folder is None or has no tokenizer.json."""
    if folder and (Path(folder) / "tokenizer.json").is_file():
        return HfTokenizer(Path(folder))
    return FastTokenizer()
