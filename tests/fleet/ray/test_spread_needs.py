"""Which files each node of a placed replica gets: TP group g runs PP stage g (vLLM's rank
order), a replica inside one node gets everything; a folder deepfleet did not pull is left as is."""

from __future__ import annotations

import json
from pathlib import Path

from deepfleet.fleet.ray.spread import replica_needs, spread_for_replica
from deepfleet.weights import cache

WEIGHT_MAP = {
    "model.embed_tokens.weight": "s1.safetensors",
    "model.layers.0.w": "s1.safetensors",
    "model.layers.1.w": "s2.safetensors",
    "model.layers.2.w": "s3.safetensors",
    "model.layers.3.w": "s3.safetensors",
    "model.norm.weight": "s3.safetensors",
    "lm_head.weight": "s3.safetensors",
}


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": WEIGHT_MAP}))
    names = [
        "s1.safetensors",
        "s2.safetensors",
        "s3.safetensors",
        "config.json",
        "model.safetensors.index.json",
    ]
    cache.mark_complete(tmp_path, {n: {"size": 1} for n in names})
    return tmp_path


def test_stage_per_tp_group(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    # 2 stages of tp 2: bundles 0-1 on node a (stage 0), 2-3 on node b (stage 1).
    needs = replica_needs(folder, {0: "a", 1: "a", 2: "b", 3: "b"}, tp=2, pp=2)
    common = {"config.json", "model.safetensors.index.json"}
    # 4 layers: stage 0 holds layers 0-1 (s1, s2), stage 1 layers 2-3 and the head (s3).
    assert needs == {
        "a": frozenset({"s1.safetensors", "s2.safetensors"} | common),
        "b": frozenset({"s3.safetensors"} | common),
    }


def test_one_bundle_gets_everything(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    assert replica_needs(folder, {0: "a"}, tp=1, pp=2)["a"] == frozenset(
        {
            "s1.safetensors",
            "s2.safetensors",
            "s3.safetensors",
            "config.json",
            "model.safetensors.index.json",
        }
    )


def test_a_folder_without_marker_is_not_spread(tmp_path: Path) -> None:
    assert spread_for_replica(str(tmp_path), {0: "a", 1: "b"}, 1, 2, [], tmp_path) is None
