"""A request's prompt as KV blocks: chat template, tokens, chained block hashes and a prefix
key, with each model's tokenizer loaded off the event loop.

The router asks for blocks only for models whose policy reads tokens. `blocks` never raises:
a model without a loadable tokenizer gets a key from the prompt's text (stable across
gateway workers), anything odd gets no blocks at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec

from deepfleet.kvcache.hashing import block_hashes, prefix_key
from deepfleet.kvcache.tokenize import ModelTokenizer, Prompt, decode_chat, decode_completion

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PromptBlocks:
    hashes: tuple[int, ...] = ()
    """Chained hashes of the prompt's full blocks (deepfleet.kvcache.hashing)."""
    tokens: int = 0
    """Prompt tokens."""
    prefix_key: int | None = None
    """A hash of the prompt's first tokens, or of its first characters without a tokenizer."""


NO_BLOCKS = PromptBlocks()


class PromptHasher:
    def __init__(
        self,
        *,
        prefix_tokens: int = 256,
        inline_bytes: int = 16_384,
        conversation_cache_tokens: int = 4_000_000,
        on_tokenized: Callable[[str, float], None] | None = None,
    ) -> None:
        """`prefix_tokens`: leading tokens in the prefix key; bodies over `inline_bytes` are
        tokenized in a worker thread; `on_tokenized(model, seconds)` after each tokenization."""
        self.prefix_tokens = prefix_tokens
        self.inline_bytes = inline_bytes
        self.conversation_cache_tokens = conversation_cache_tokens
        self._on_tokenized = on_tokenized
        self._folders: dict[str, str] = {}
        self._tokenizers: dict[str, asyncio.Future[ModelTokenizer | None]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kv-tokenize")

    def set_models(self, folders: Mapping[str, str]) -> None:
        """model -> its tokenizer's folder; loads the new ones in the background (call from
        inside the event loop)."""
        self._folders = dict(folders)
        for folder in folders.values():
            if folder not in self._tokenizers:
                self._tokenizers[folder] = asyncio.ensure_future(self._load(folder))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _load(self, folder: str) -> ModelTokenizer | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor,
                lambda: ModelTokenizer(Path(folder), self.conversation_cache_tokens),
            )
        except Exception:
            log.exception("cannot load the tokenizer in %s; routing without tokens", folder)
            return None

    async def blocks(self, model: str, path: str, body: bytes, block_size: int) -> PromptBlocks:
        """The prompt of `body` (a request to `path`) as `block_size`-token blocks."""
        started = time.perf_counter()
        try:
            future = self._tokenizers.get(self._folders.get(model, ""))
            tokenizer = await future if future is not None else None
            if tokenizer is None:
                return PromptBlocks(prefix_key=text_key(path, body))
            if len(body) > self.inline_bytes:
                loop = asyncio.get_running_loop()
                out = await loop.run_in_executor(
                    self._executor, self._tokenize, tokenizer, path, body, block_size
                )
            else:
                out = self._tokenize(tokenizer, path, body, block_size)
        except Exception:
            log.debug("routing %s without tokens", model, exc_info=True)
            return NO_BLOCKS
        if self._on_tokenized is not None:
            self._on_tokenized(model, time.perf_counter() - started)
        if out is None:
            return PromptBlocks(prefix_key=text_key(path, body))
        prompt, hashes, key = out
        return PromptBlocks(tuple(hashes), len(prompt.tokens), key)

    def _tokenize(
        self, tokenizer: ModelTokenizer, path: str, body: bytes, block_size: int
    ) -> tuple[Prompt, list[int], int] | None:
        if path.endswith("/chat/completions"):
            prompt = tokenizer.chat(decode_chat(body))
        else:
            found = tokenizer.completion(decode_completion(body))
            if found is None:
                return None
            prompt = found
        return (
            prompt,
            block_hashes(prompt.tokens, block_size),
            prefix_key(prompt.tokens, self.prefix_tokens),
        )


class _Texts(msgspec.Struct):
    messages: list[dict[str, object]] | None = None
    prompt: object = None


def text_key(path: str, body: bytes, chars: int = 1024) -> int | None:
    """Without a tokenizer: a key from the prompt's first characters (stable across workers)."""
    with contextlib.suppress(msgspec.DecodeError):
        texts = msgspec.json.decode(body, type=_Texts)
        if texts.messages:
            text = "".join(str(m.get("content", "")) for m in texts.messages)
        else:
            text = str(texts.prompt or "")
        digest = hashlib.blake2b(text[:chars].encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")
    return None
