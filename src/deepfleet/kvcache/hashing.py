"""Our block hashes: one 64-bit hash per full KV block, chained to its parent, so equal hashes
mean equal token prefixes.

The index hashes the token ids that engines report in BlockStored events, and the gateway
hashes each request's tokens, with this one function: the engine's own hashes (seeded, sha256,
and with extra keys for LoRA or images) never need to be reproduced. Python's hash of a tuple
of ints is the same in every process (only str/bytes hashing is salted), fast, and C-coded.
"""

from __future__ import annotations

from collections.abc import Sequence

ROOT = 0x5EED_B10C


def block_hashes(tokens: Sequence[int], block_size: int, known: Sequence[int] = ()) -> list[int]:
    """Hashes of every full block of `tokens`, extending the `known` leading hashes."""
    out = list(known)
    parent = out[-1] if out else ROOT
    for index in range(len(out), len(tokens) // block_size):
        parent = hash((parent, tuple(tokens[index * block_size : (index + 1) * block_size])))
        out.append(parent)
    return out


def chain_from(parent: int | None, tokens: Sequence[int], block_size: int) -> list[int]:
    """Hashes of the full blocks of `tokens` that follow a block hashed `parent` (None: the
    first block of a prompt)."""
    out = []
    current = ROOT if parent is None else parent
    for index in range(len(tokens) // block_size):
        current = hash((current, tuple(tokens[index * block_size : (index + 1) * block_size])))
        out.append(current)
    return out


def prefix_key(tokens: Sequence[int], length: int) -> int:
    """A key for approximate prefix routing: the first `length` tokens (all, if fewer)."""
    return hash((ROOT, tuple(tokens[:length])))
