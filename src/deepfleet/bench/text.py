"""Deterministic filler text whose length in tokens is predictable.

Every word below is one token for the simulator's fast tokenizer and for common BPE
tokenizers (Llama/SmolLM2, GPT-2), so `words(n)` is close to n tokens on both.
"""

from __future__ import annotations

import random

_WORDS = (
    "the of and to in is was for on that with as by at from it an be this are or his"
    " but not have had they which one you were all her she there can more if no when"
    " what so out up said into has do time only new some could two may first like then"
    " other well over also any after back use most way how our many years these people"
    " made work three part must while years four five six seven eight nine ten red blue"
    " green black white water light sound house river city world country school state"
    " family group number money market system program question story point place case"
    " week company night line book word name hand table room door car tree cloud road"
)
VOCABULARY = tuple(_WORDS.split())


def words(count: int, rng: random.Random) -> str:
    """`count` words drawn from VOCABULARY, space separated."""
    return " ".join(rng.choice(VOCABULARY) for _ in range(max(count, 0)))


def tagged(tag: str, count: int, rng: random.Random) -> str:
    """`count` words (at least the tag's) starting with a unique tag, so two texts share no
    prefix by accident."""
    body = words(max(count - len(tag.split()), 0), rng)
    return f"{tag}: {body}" if body else f"{tag}:"
