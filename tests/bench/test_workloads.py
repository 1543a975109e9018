from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepfleet.bench.workloads import build_workload
from deepfleet.bench.workloads.trace import BLOCK_TOKENS


def test_shared_prefix_groups_share_their_system_prompt() -> None:
    params = {"groups": "3", "prompts_per_group": "4", "system_len": "50", "question_len": "5"}
    w = build_workload("shared-prefix", 0, params)
    assert w.size == 12
    systems = {c[0].messages[0]["content"] for c in w.chains}  # type: ignore[index]
    assert len(systems) == 3
    assert all(len(s.split()) == 50 for s in systems)


def test_shared_prefix_defaults_are_sglangs() -> None:
    assert build_workload("shared-prefix", 0).size == 64 * 16


def test_multi_turn_history_grows_each_round() -> None:
    w = build_workload("multi-turn", 6, {"rounds": "3", "system_len": "10", "history_len": "10"})
    assert [len(c) for c in w.chains] == [3, 3]
    lengths = [len(spec.messages or ()) for spec in w.chains[0]]
    assert lengths == [2, 4, 6]
    first, second = w.chains[0][0].messages, w.chains[0][1].messages
    assert first is not None and second is not None
    assert second[: len(first)] == first


@pytest.mark.parametrize("dist", ["fixed", "uniform", "exponential"])
def test_synthetic_lengths(dist: str) -> None:
    w = build_workload("synthetic", 20, {"dist": dist, "input_len": "40", "output_len": "8"})
    assert w.size == 20
    if dist == "fixed":
        assert {c[0].max_tokens for c in w.chains} == {8}


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match="nope"):
        build_workload("synthetic", 1, {"nope": "1"})


def test_trace_shares_blocks_and_keeps_timestamps(tmp_path: Path) -> None:
    lines = [
        {"timestamp": 1000, "input_length": 700, "output_length": 5, "hash_ids": [1, 2]},
        {"timestamp": 1500, "input_length": 600, "output_length": 7, "hash_ids": [1, 3]},
    ]
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(line) for line in lines))
    w = build_workload(f"trace:{trace}", 0)
    first, second = (c[0].prompt or "" for c in w.chains)
    assert len(first.split()) == 700
    assert len(second.split()) == 600
    assert first.split()[:BLOCK_TOKENS] == second.split()[:BLOCK_TOKENS]
    assert first.split()[BLOCK_TOKENS] != second.split()[BLOCK_TOKENS]
    assert w.schedule_s == (0.0, 0.5)
    assert [c[0].max_tokens for c in w.chains] == [5, 7]
