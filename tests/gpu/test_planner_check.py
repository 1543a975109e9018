"""The planner comparison and the model folders the GPU runs serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.gpu import model_dirs, planner_check, vllm_log

from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import count_params


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = tmp_path_factory.mktemp("tok")
    (tok / "tokenizer.json").write_text("{}")
    out = tmp_path_factory.mktemp("models")
    model_dirs.write_models(out, tok)
    return out


def test_model_folders(models: Path) -> None:
    qwen = load_model_facts(str(models / "qwen2-7b"))
    assert (qwen.hidden_size, qwen.num_layers, qwen.num_heads, qwen.num_kv_heads) == (
        3584, 28, 28, 4,
    )  # fmt: skip
    assert (qwen.intermediate_size, qwen.vocab_size, qwen.qkv_bias) == (18944, 49152, True)
    v3 = load_model_facts(str(models / "dsv3-8l"))
    assert v3.num_layers == 8 and v3.moe is not None and v3.mla is not None
    assert (v3.dense_layer_count, v3.moe_layer_count, v3.mtp_layers) == (3, 5, 0)
    assert v3.shipped_format == "fp8" and v3.vocab_size == 49152
    config = json.loads((models / "dsv3-8l" / "config.json").read_text())
    assert config["quantization_config"]["weight_block_size"] == [128, 128]
    assert "auto_map" not in config  # vLLM's built-in DeepseekV3 class, no remote code
    assert (models / "qwen2-7b" / "tokenizer.json").is_file()
    assert 6.8e9 < count_params(qwen).total < 7.1e9


def _facts(weights: float, kv_gib: float, tokens: int) -> vllm_log.StartupFacts:
    return vllm_log.StartupFacts(weights_gib=weights, available_kv_gib=kv_gib, kv_tokens=tokens)


RESULTS = Path(__file__).parents[2] / "benchmarks/results/gpu"


def _measured(name: str) -> vllm_log.StartupFacts:
    """The startup facts of a committed GPU run (benchmarks/results/gpu, 2026-11-29)."""
    startup = json.loads((RESULTS / f"planner-{name}.json").read_text())["startup"]
    return _facts(startup["weights_gib"], startup["available_kv_gib"], startup["kv_tokens"])


def test_7b_as_measured_on_the_h200(models: Path) -> None:
    """Measured: weights 12.94 GiB, KV 114.38 GiB = 2,141,792 tokens (docs/gpu.md)."""
    pred = planner_check.predict(str(models / "qwen2-7b"), 0.92, 4096)
    check = planner_check.compare(pred, _measured("qwen2-7b"))
    rows = {r["quantity"]: r for r in check["rows"]}
    assert rows["kv_bytes_per_token"]["predicted"] == 57344
    assert abs(rows["kv_bytes_per_token"]["error"]) < 0.001
    assert -0.02 < rows["weights"]["error"] < 0
    assert abs(rows["kv_tokens"]["error"]) < 0.01
    assert check["all_within_target"] is True
    assert "kv_tokens" in planner_check.table(check)


def test_v3_slice_as_measured(models: Path) -> None:
    """The 8-layer DeepSeek-V3 cut: 6,892,032 tokens in 59.15 GiB measured; the planner's
    non-KV terms from vLLM's sources (docs/planner.md) put it within a few percent."""
    pred = planner_check.predict(str(models / "dsv3-8l"), 0.92, 8192)
    assert pred.kv_bytes_per_token == 576 * 2 * 8
    check = planner_check.compare(pred, _measured("dsv3-8l"))
    rows = {r["quantity"]: r for r in check["rows"]}
    assert rows["weights"]["within_target"] is True
    assert abs(rows["kv_bytes_per_token"]["error"]) < 0.001
    assert abs(rows["kv_tokens"]["error"]) < 0.05


def test_missing_measurements_are_not_judged(models: Path) -> None:
    pred = planner_check.predict(str(models / "qwen2-7b"), 0.42, 4096)
    check = planner_check.compare(pred, vllm_log.StartupFacts())
    assert all(r["measured"] is None and r["within_target"] is None for r in check["rows"])
    assert check["all_within_target"] is None
