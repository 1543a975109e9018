"""Request -> tokens: the same ids as Hugging Face's apply_chat_template (what vLLM calls),
also when a conversation's earlier turns are reused; and what it costs."""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from deepfleet.kvcache.hashing import block_hashes
from deepfleet.kvcache.tokenize import ChatBody, CompletionBody, ModelTokenizer
from tests.kvcache.sim_fleet import tokenizer_folder

FOLDER = tokenizer_folder()
pytestmark = pytest.mark.skipif(
    not (FOLDER / "tokenizer.json").is_file(), reason="bundled model not prepared"
)
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "12", "lazy", "dogs", ",", ".", "!",
         "?", "\n", "café", "naïve", " two", "spaces\t")  # fmt: skip


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def hf() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers = pytest.importorskip("transformers")
        return transformers.AutoTokenizer.from_pretrained(str(FOLDER))


def conversations(seed: int, count: int, turns: int) -> list[list[list[dict[str, Any]]]]:
    """Per conversation, the message list of each turn (each repeats the previous ones)."""
    rng = random.Random(seed)
    out = []
    for c in range(count):
        messages: list[dict[str, Any]] = (
            [{"role": "system", "content": text(rng, 300)}] if c % 2 else []
        )
        turns_of = []
        for _ in range(turns):
            messages.append({"role": "user", "content": text(rng, rng.randint(1, 80))})
            turns_of.append(list(messages))
            messages.append({"role": "assistant", "content": text(rng, rng.randint(1, 120))})
        out.append(turns_of)
    return out


def test_chat_tokens_match_apply_chat_template_with_reuse(hf: Any) -> None:
    tokenizer = ModelTokenizer(Path(FOLDER))
    reused = 0
    for turns in conversations(1, 12, 5):
        for messages in turns:
            prompt = tokenizer.chat(ChatBody(messages=messages))
            expected = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
            if hasattr(expected, "keys"):
                expected = expected["input_ids"]
            assert list(prompt.tokens) == list(expected)
            reused += prompt.cached_tokens
    assert reused > 0


def test_content_parts_and_completions(hf: Any) -> None:
    tokenizer = ModelTokenizer(Path(FOLDER))
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    plain = [{"role": "user", "content": "a\nb"}]
    assert list(tokenizer.chat(ChatBody(messages=parts)).tokens) == list(
        tokenizer.chat(ChatBody(messages=plain)).tokens
    )
    done = tokenizer.completion(CompletionBody(prompt="Hello world"))
    assert done is not None and list(done.tokens) == hf("Hello world")["input_ids"]
    ids = tokenizer.completion(CompletionBody(prompt=[5, 6, 7]))
    assert ids is not None and list(ids.tokens) == [5, 6, 7]
    assert tokenizer.completion(CompletionBody(prompt=["a", "b"])) is None


def test_cost_per_request_with_and_without_reuse() -> None:
    """A 10-turn chat growing from ~3,800 to ~15,600 tokens: later turns re-tokenize only their
    new text (measured on the 2-core box: ~23 ms per turn whole, ~3.5 ms reusing)."""
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(3000)]  # fmt: skip

    def words(n: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(n))

    turns: list[ChatBody] = []
    messages: list[dict[str, Any]] = [{"role": "system", "content": words(1000)}]
    for _ in range(10):
        messages.append({"role": "user", "content": words(60)})
        turns.append(ChatBody(messages=list(messages)))
        messages.append({"role": "assistant", "content": words(300)})
    per_turn = {}
    for name, cache in (("whole", 0), ("reusing", 4_000_000)):
        tokenizer = ModelTokenizer(Path(FOLDER), max_cached_tokens=cache)
        tokenizer.chat(turns[0])
        started = time.perf_counter()
        for body in turns[1:]:
            prompt = tokenizer.chat(body)
            block_hashes(prompt.tokens, 16)
        per_turn[name] = (time.perf_counter() - started) / (len(turns) - 1) * 1000
        assert (prompt.cached_tokens > 14_000) == (cache > 0)
    print(f"per later turn: {per_turn['whole']:.1f} ms whole, {per_turn['reusing']:.1f} ms reusing")
    assert per_turn["reusing"] < per_turn["whole"] / 2
