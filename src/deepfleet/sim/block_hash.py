"""Prefix-cache block hashes computed exactly as vLLM's default (`--prefix-caching-hash-algo
sha256`, vllm/v1/core/kv_cache_utils.py `hash_block_tokens`), so the simulator reports the same
hashes a real engine would for the same token ids.

hash(block) = sha256(pickle((parent_hash or NONE_HASH, tuple(token_ids), None))), with
NONE_HASH = sha256(pickle("vllm-none-hash")) unless PYTHONHASHSEED is set. KV events carry the
low 64 bits as an int (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES, on by default).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence

DEFAULT_NONE_HASH_SEED = "vllm-none-hash"


def sha256_pickle(value: object) -> bytes:
    return hashlib.sha256(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def none_hash() -> bytes:
    return sha256_pickle(os.getenv("PYTHONHASHSEED") or DEFAULT_NONE_HASH_SEED)


def block_hash(parent: bytes | None, token_ids: Sequence[int], none: bytes) -> bytes:
    return sha256_pickle((parent or none, tuple(token_ids), None))


def chain_hashes(
    token_ids: Sequence[int], block_size: int, none: bytes, start: Sequence[bytes] = ()
) -> list[bytes]:
    """Hashes of every full block of token_ids, extending the already known `start` hashes."""
    hashes = list(start)
    full = len(token_ids) // block_size
    for index in range(len(hashes), full):
        parent = hashes[-1] if hashes else None
        hashes.append(
            block_hash(parent, token_ids[index * block_size : (index + 1) * block_size], none)
        )
    return hashes


def external(hash_bytes: bytes) -> int:
    """The hash as vLLM publishes it in KV events: the low 64 bits, big-endian."""
    return int.from_bytes(hash_bytes, "big") & ((1 << 64) - 1)
