from __future__ import annotations

from deepfleet.sim.block_hash import block_hash, chain_hashes, external, none_hash


def test_chain_depends_on_every_earlier_block() -> None:
    none = none_hash()
    a = chain_hashes([1, 2, 3, 4, 5, 6], 2, none)
    b = chain_hashes([9, 2, 3, 4, 5, 6], 2, none)
    assert len(a) == 3
    assert all(x != y for x, y in zip(a, b, strict=True))
    assert a[1] == block_hash(a[0], [3, 4], none)


def test_chain_extends_known_hashes() -> None:
    none = none_hash()
    full = chain_hashes(list(range(8)), 2, none)
    assert chain_hashes(list(range(8)), 2, none, full[:2]) == full


def test_external_hash_is_64_bits() -> None:
    assert 0 <= external(none_hash()) < 2**64
