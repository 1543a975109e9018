"""Weight bytes per format: hand-computed tensors, and which tensors stay unquantized."""

from __future__ import annotations

import pytest

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import count_params, get_format, kv_dtype_bytes, model_weight_bytes
from deepfleet.planner.params import Shard, Tensor

LINEAR = Tensor("w", 4096, 4096, Shard.SPLIT, quantizable=True)
EXPERT = Tensor("e", 2048, 7168, Shard.EXPERT, quantizable=True, count=256)
EMBED = Tensor("embed", 129280, 7168, Shard.SPLIT, quantizable=False)


@pytest.mark.parametrize(
    ("fmt", "tensor", "expected"),
    [
        ("bf16", LINEAR, 4096 * 4096 * 2),
        ("fp8", LINEAR, 4096 * 4096 + 32 * 32 * 4),  # one fp32 scale per 128x128 block
        ("int8", LINEAR, 4096 * 4096 + 4096 * 4),  # one fp32 scale per output channel
        # int4: half a byte per weight; per 128 inputs and output channel an fp16 scale and
        # a 4-bit zero: 4096 x 32 x 2.5 bytes.
        ("int4", LINEAR, 4096 * 4096 // 2 + 4096 * 32 * 5 // 2),
        ("fp8", EXPERT, 256 * (2048 * 7168 + 16 * 56 * 4)),
        ("fp8", EMBED, 129280 * 7168 * 2),  # embeddings stay bf16
        ("int4", EMBED, 129280 * 7168 * 2),
        ("fp32", LINEAR, 4096 * 4096 * 4),  # vLLM --dtype float32
    ],
)
def test_tensor_bytes(fmt: str, tensor: Tensor, expected: int) -> None:
    assert get_format(fmt, "bf16").tensor_bytes(tensor) == expected


@pytest.mark.parametrize(
    "name", ["DeepSeek-R1-Distill-Qwen-7B", "DeepSeek-R1", "SmolLM2-135M-Instruct"]
)
def test_bf16_is_two_bytes_per_parameter(name: str) -> None:
    m = load_model_facts(name)
    assert model_weight_bytes(m, get_format("bf16", "bf16")) == 2 * count_params(m).total


def test_r1_fp8_is_one_byte_per_linear_weight_plus_bf16_rest() -> None:
    m = load_model_facts("DeepSeek-R1")
    p = count_params(m)
    fp8 = model_weight_bytes(m, get_format(None, m.shipped_format))
    unquantized = p.embedding + p.lm_head + p.norms + 58 * (256 * 7168 + 256)  # + router
    lower = (p.total - unquantized) + 2 * unquantized
    assert lower < fp8 < lower * 1.0004  # block scales add 4 bytes per 16,384 weights


@pytest.mark.parametrize(
    ("spelling", "shipped", "name"),
    [
        (None, "fp8", "fp8"),
        ("auto", "bf16", "bf16"),
        ("AWQ", "bf16", "int4"),
        ("w8a8", "fp8", "int8"),
    ],
)
def test_format_names(spelling: str | None, shipped: str, name: str) -> None:
    assert get_format(spelling, shipped).name == name


def test_unknown_format_lists_known() -> None:
    with pytest.raises(ValueError, match="bf16, fp16, fp32, fp8, int8, int4"):
        get_format("nf4", "bf16")


@pytest.mark.parametrize(
    ("fmt", "device", "runs"),
    [
        ("fp8", "H100", True),
        ("fp8", "A100-40GB", True),  # Marlin weight-only FP8
        ("fp8", "Ascend-910B", False),
        ("int4", "Ascend-910B", False),
        ("int8", "Ascend-910B", True),
        ("bf16", "CPU", True),
        ("int4", "CPU", False),
    ],
)
def test_format_support(fmt: str, device: str, runs: bool) -> None:
    assert (get_format(fmt, "bf16").unsupported_reason(get_device(device)) is None) is runs


def test_fp8_on_ampere_carries_a_note() -> None:
    note = get_format("fp8", "bf16").note(get_device("A100-40GB"))
    assert note is not None and "Marlin" in note
    assert get_format("fp8", "bf16").note(get_device("H100")) is None


@pytest.mark.parametrize(
    ("kv", "size"), [("auto", 2), ("bf16", 2), ("fp8", 1), ("fp8_e5m2", 1), ("float32", 4)]
)
def test_kv_dtype_bytes(kv: str, size: int) -> None:
    assert kv_dtype_bytes(kv) == size
