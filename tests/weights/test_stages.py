"""Which shards each pipeline stage needs: the split is vLLM's own (checked against the
installed vLLM's get_pp_indices), the files come from the index's weight_map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepfleet.weights.stages import files_for_stages, layer_ranges, stage_shards


@pytest.mark.parametrize(
    ("layers", "pp", "partition"),
    [(30, 2, None), (61, 2, None), (61, 4, None), (61, 3, None), (7, 5, None), (62, 4, None),
     (61, 2, "30,31"), (64, 8, None)],
)  # fmt: skip
def test_split_is_vllms(
    layers: int, pp: int, partition: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    utils = pytest.importorskip("vllm.distributed.utils")
    import vllm.envs

    if partition:
        monkeypatch.setenv("VLLM_PP_LAYER_PARTITION", partition)
    else:
        monkeypatch.delenv("VLLM_PP_LAYER_PARTITION", raising=False)
    if hasattr(vllm.envs, "disable_envs_cache"):
        vllm.envs.disable_envs_cache()
    theirs = [utils.get_pp_indices(layers, r, pp) for r in range(pp)]
    assert layer_ranges(layers, pp, partition) == theirs


def test_r1_reference_split() -> None:
    # DeepSeek-R1: 61 layers; vLLM gives the odd layer to the first stage (not the last).
    assert layer_ranges(61, 2) == [(0, 31), (31, 61)]


def test_bad_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="VLLM_PP_LAYER_PARTITION"):
        layer_ranges(61, 2, "30,30")


WEIGHT_MAP = {
    "model.embed_tokens.weight": "a.safetensors",
    "model.layers.0.mlp.weight": "a.safetensors",
    "model.layers.1.mlp.weight": "b.safetensors",
    "model.layers.2.mlp.weight": "b.safetensors",
    "model.layers.3.mlp.weight": "c.safetensors",
    "model.layers.4.mlp.weight": "d.safetensors",  # past num_layers: MTP, last stage
    "model.norm.weight": "c.safetensors",
    "lm_head.weight": "e.safetensors",
}


@pytest.mark.parametrize(
    ("tied", "expected"),
    [
        (False, [{"a.safetensors", "b.safetensors"},
                 {"b.safetensors", "c.safetensors", "d.safetensors", "e.safetensors"}]),
        (True, [{"a.safetensors", "b.safetensors"},
                {"a.safetensors", "b.safetensors", "c.safetensors", "d.safetensors",
                 "e.safetensors"}]),
    ],
)  # fmt: skip
def test_stage_shards(tied: bool, expected: list[set[str]]) -> None:
    # 4 layers over 2 stages: [0, 2) and [2, 4); layer 2 lives in b, so both need b.
    assert stage_shards(WEIGHT_MAP, 4, 2, tied=tied) == expected


def test_files_for_stages_keeps_config_and_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": WEIGHT_MAP}))
    names = [*sorted(set(WEIGHT_MAP.values())), "config.json", "tokenizer.json",
             "model.safetensors.index.json"]  # fmt: skip
    first = files_for_stages(tmp_path, names, 2, [0])
    assert first == {"a.safetensors", "b.safetensors", "config.json", "tokenizer.json",
                     "model.safetensors.index.json"}  # fmt: skip
    assert files_for_stages(tmp_path, names, 1, [0]) == set(names)
    assert files_for_stages(tmp_path, names, 2, [0, 1]) == set(names)


def test_single_file_checkpoint_goes_whole(tmp_path: Path) -> None:
    names = ["model.safetensors", "config.json"]
    assert files_for_stages(tmp_path, names, 2, [1]) == set(names)
