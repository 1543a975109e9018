"""The doctor's weights checks: a node's disk is judged against what that node will hold (its
pipeline stage's shards for a pulled model), a load format's missing package and a model folder
on a network file system are warned about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepfleet.config.load import validate
from deepfleet.fleet.doctor.checks import expectations
from deepfleet.fleet.doctor.holdings import node_share
from deepfleet.fleet.doctor.weights import local_findings
from deepfleet.weights import cache

WEIGHT_MAP = {
    "model.embed_tokens.weight": "a.safetensors",
    "model.layers.0.w": "a.safetensors",
    "model.layers.1.w": "b.safetensors",
    "model.norm.weight": "b.safetensors",
}
SIZES = {"a.safetensors": 600, "b.safetensors": 300, "config.json": 10,
         "model.safetensors.index.json": 5}  # fmt: skip


def _pulled(root: Path) -> None:
    folder = root / "weights" / "hf" / "org--m" / "abc123"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": WEIGHT_MAP}))
    cache.mark_complete(folder, {n: {"size": s} for n, s in SIZES.items()})


def _config(tp: int, pp: int, per_node: int) -> object:
    return validate({
        "cluster": {"mode": "ray", "nodes": 2, "devices_per_node": per_node, "device": "H100"},
        "models": [{"name": "m", "source": "hf://org/m", "engine": "vllm",
                    "parallel": {"tp": tp, "pp": pp}}],
    }, "fleet.yaml")  # fmt: skip


@pytest.mark.parametrize(
    ("tp", "pp", "per_node", "expected"),
    [(1, 1, 1, 915),  # a replica inside a node: everything
     (1, 2, 1, 615),  # stage 0 (a + small files) is the larger share
     (1, 2, 2, 915)],  # both stages on one node
)  # fmt: skip
def test_node_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tp: int, pp: int, per_node: int, expected: int
) -> None:
    monkeypatch.setenv("DEEPFLEET_CACHE_DIR", str(tmp_path))
    _pulled(tmp_path)
    cfg = _config(tp, pp, per_node)
    assert node_share(cfg, 0) == expected  # type: ignore[arg-type]
    (need,) = expectations(cfg).models  # type: ignore[arg-type]
    assert need.bytes_needed == expected and need.path == str(tmp_path / "weights")


def test_no_copy_on_the_head_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFLEET_CACHE_DIR", str(tmp_path))
    assert node_share(_config(1, 2, 1), 0) is None  # type: ignore[arg-type]


def test_missing_load_format_package_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = validate({"models": [{"name": "m", "source": "bundled", "engine": "vllm-cpu",
                                "engine_args": {"load_format": "auto"}}]}, "f")  # fmt: skip
    cfg.models[0].engine_args["load_format"] = "runai_streamer"  # as if valid: check the package
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    (finding,) = local_findings(cfg)
    assert finding.level == "warn" and "runai-model-streamer" in finding.line()
