"""Who fetches from whom: the head once per rack, the rest from their rack's seed."""

from __future__ import annotations

from pathlib import Path

from deepfleet.weights.spread_plan import (
    Transfer,
    folder_key,
    local_folder,
    read_progress,
    waves,
    write_progress,
)

A, B = frozenset({"a"}), frozenset({"b"})
ORDER = ["h", "n1", "n2", "n3", "n4"]


def test_without_racks_everyone_fetches_from_the_head_at_once() -> None:
    needs = {"h": A | B, "n1": A, "n2": B, "n3": frozenset(), "n4": A}
    assert waves("h", ORDER, needs) == [
        [Transfer("n1", "h", A), Transfer("n2", "h", B), Transfer("n4", "h", A)]
    ]


def test_one_seed_per_rack_fetches_its_racks_union_from_the_head() -> None:
    needs = {"n1": A, "n2": A, "n3": A, "n4": B}
    racks = {"h": "r0", "n1": "r0", "n2": "r1", "n3": "r1", "n4": "r1"}
    first, second = waves("h", ORDER, needs, racks)
    assert first == [Transfer("n1", "h", A), Transfer("n2", "h", A | B)]
    assert second == [Transfer("n3", "n2", A), Transfer("n4", "n2", B)]


def test_nothing_to_do() -> None:
    assert waves("h", ORDER, {}) == []
    assert waves("h", ORDER, {"h": A}, {"h": "r0"}) == []


def test_folder_keys_resolve_per_node(tmp_path: Path) -> None:
    head, node = tmp_path / "head", tmp_path / "node"
    folder = head / "weights" / "hf" / "org--m" / "abc"
    key = folder_key(folder, head)
    assert key == "hf/org--m/abc"
    assert local_folder(key, node) == node / "weights" / "hf" / "org--m" / "abc"
    outside = tmp_path / "models" / "m"
    assert local_folder(folder_key(outside, head), node) == outside.resolve()


def test_progress_file_round_trip(tmp_path: Path) -> None:
    assert read_progress(tmp_path) is None
    write_progress(tmp_path, "m", {"10.0.0.2": {"done": 1, "total": 2}})
    data = read_progress(tmp_path)
    assert data is not None and data["nodes"] == {"10.0.0.2": {"done": 1, "total": 2}}


def test_status_lines_per_node() -> None:
    from deepfleet.cli.spread_cmd import spread_text

    text = spread_text({"model": "hf/org--m/abc", "nodes": {
        "10.0.0.2": {"done": 5 * 10**9, "total": 10 * 10**9, "state": "fetching",
                     "from": "10.0.0.1"}}})  # fmt: skip
    assert "hf/org--m/abc" in text
    assert "10.0.0.2" in text and "5.00 / 10.00 GB" in text and "50.0%" in text
    assert "fetching (from 10.0.0.1)" in text
