"""A request's prompt as blocks: the tokenizer's tokens hashed per block, inline or in the
worker thread for large bodies; without a tokenizer a key from the text; never an exception."""

from __future__ import annotations

import json

import pytest

from deepfleet.kvcache.hashing import block_hashes, prefix_key
from deepfleet.kvcache.prompts import NO_BLOCKS, PromptBlocks, PromptHasher, text_key
from deepfleet.kvcache.tokenize import ModelTokenizer, decode_chat
from tests.kvcache.sim_fleet import tokenizer_folder

CHAT = "/v1/chat/completions"


def chat(system: str) -> bytes:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
    return json.dumps({"model": "m", "messages": messages}).encode()


async def test_without_a_tokenizer_the_text_gives_the_key() -> None:
    hasher = PromptHasher()
    try:
        body = chat("a shared system prompt")
        got = await hasher.blocks("m", CHAT, body, 16)
        assert got == PromptBlocks(prefix_key=text_key(CHAT, body))
        assert got.prefix_key == text_key(CHAT, chat("a shared system prompt"))
        assert await hasher.blocks("m", CHAT, b"not json", 16) == PromptBlocks()
    finally:
        hasher.close()


@pytest.mark.skipif(
    not (tokenizer_folder() / "tokenizer.json").is_file(), reason="bundled model not prepared"
)
@pytest.mark.parametrize("inline_bytes", [1 << 20, 0])  # inline, then in the worker thread
async def test_with_a_tokenizer_the_blocks_hash_the_tokens(inline_bytes: int) -> None:
    seen: list[str] = []
    hasher = PromptHasher(
        prefix_tokens=32, inline_bytes=inline_bytes, on_tokenized=lambda m, s: seen.append(m)
    )
    hasher.set_models({"m": str(tokenizer_folder())})
    try:
        body = chat(" ".join(f"word{i}" for i in range(200)))
        got = await hasher.blocks("m", CHAT, body, 16)
        tokens = ModelTokenizer(tokenizer_folder()).chat(decode_chat(body)).tokens
        assert got.hashes == tuple(block_hashes(tokens, 16)) and len(got.hashes) > 10
        assert (got.tokens, got.prefix_key) == (len(tokens), prefix_key(tokens, 32))
        assert seen == ["m"]
        assert await hasher.blocks("m", CHAT, b'{"messages": 3}', 16) is NO_BLOCKS
    finally:
        hasher.close()
