"""Weight formats: bytes per tensor, with the scales each quantization scheme stores.

Quantized formats apply to the linear layers only (`Tensor.quantizable`); embeddings, norms,
biases, the MoE router and lm_head stay in bf16 in every published checkpoint of these
formats, and vLLM keeps them so.

- bf16 / fp16: 2 bytes per weight; fp32 (vLLM `--dtype float32`, e.g. the bundled model on
  the CPU): 4 bytes per weight, every tensor.
- fp8 (DeepSeek-V3's format): 1 byte per weight plus one fp32 scale per 128 x 128 block
  (`weight_scale_inv`), i.e. ceil(rows/128) x ceil(cols/128) x 4 bytes.
- int8 (W8A8, e.g. vllm-ascend's W8A8 and compressed-tensors): 1 byte per weight plus one fp32
  scale per output channel (rows x 4 bytes); activations are quantized per token at run time.
- int4 (AWQ/GPTQ, group 128): 4 bits per weight, and per group of 128 inputs one fp16 scale
  and one packed 4-bit zero point per output channel: rows x cols/128 x (2 + 0.5) bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from deepfleet.catalog.hardware import Device
from deepfleet.planner.params import Tensor


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class WeightFormat:
    """How the quantizable weights are stored; `bits` is the weight itself, scales aside."""

    name: str
    bits: int
    description: str
    quantized: bool
    dense_bytes: int = 2
    """Bytes per weight of the tensors left unquantized (all of them when not quantized)."""

    def tensor_bytes(self, t: Tensor) -> int:
        """Bytes of `t` (all `count` copies) stored in this format."""
        if not (self.quantized and t.quantizable and t.cols > 1):
            return t.params * self.dense_bytes
        weights = t.rows * t.cols * self.bits // 8
        if self.name == "fp8":
            scales = _cdiv(t.rows, 128) * _cdiv(t.cols, 128) * 4
        elif self.name == "int8":
            scales = t.rows * 4
        else:  # int4, group 128: fp16 scale + 4-bit zero per group and output channel
            scales = t.rows * _cdiv(t.cols, 128) * 5 // 2
        return (weights + scales) * t.count

    def total_bytes(self, tensors: Iterable[Tensor]) -> int:
        return sum(self.tensor_bytes(t) for t in tensors)

    def unsupported_reason(self, device: Device) -> str | None:
        """Why this format cannot run on `device`, or None when it can."""
        if device.vendor == "cpu" and self.quantized:
            return f"vLLM's CPU build serves bf16/fp16/fp32 weights here, not {self.name}"
        if device.vendor == "huawei" and self.name in {"fp8", "int4"}:
            return (
                f"{device.name} has no {self.name} kernels in vllm-ascend; "
                "use int8 (W8A8) or bf16 weights"
            )
        return None

    def note(self, device: Device) -> str | None:
        """A caveat worth printing when the format runs, but not natively."""
        if self.name == "fp8" and device.vendor == "nvidia" and not device.fp8:
            return (
                f"{device.name} has no FP8 tensor cores: vLLM runs the FP8 weights through "
                "Marlin (weight-only, bf16 compute); memory as FP8, prefill slower"
            )
        return None


FORMATS: Mapping[str, WeightFormat] = MappingProxyType(
    {
        "bf16": WeightFormat("bf16", 16, "bfloat16", quantized=False),
        "fp16": WeightFormat("fp16", 16, "float16", quantized=False),
        "fp32": WeightFormat("fp32", 32, "float32", quantized=False, dense_bytes=4),
        "fp8": WeightFormat("fp8", 8, "FP8 e4m3, 128x128 block scales", quantized=True),
        "int8": WeightFormat("int8", 8, "INT8 W8A8, per-channel scales", quantized=True),
        "int4": WeightFormat("int4", 4, "INT4 AWQ/GPTQ, group 128", quantized=True),
    }
)

_ALIASES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float32": "fp32",
    "float": "fp32",
    "auto": "",
    "w8a8": "int8",
    "awq": "int4",
    "gptq": "int4",
    "w4a16": "int4",
}


def get_format(name: str | None, shipped: str) -> WeightFormat:
    """The format called `name` (aliases: bfloat16, w8a8, awq, gptq, ...); None/auto: `shipped`."""
    key = (name or "").strip().lower()
    key = _ALIASES.get(key, key) or shipped
    if key not in FORMATS:
        raise ValueError(f"unknown weight format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[key]


def kv_dtype_bytes(kv_dtype: str | None) -> int:
    """Bytes per KV element: 2 for auto/bf16/fp16, 1 for fp8 (e4m3 or e5m2), 4 for float32
    (vLLM's `auto` follows the model's dtype: pass float32 when it is served in float32)."""
    key = (kv_dtype or "auto").strip().lower()
    if key in {"float32", "fp32", "float"}:
        return 4
    if key in {"auto", "bf16", "bfloat16", "fp16", "float16", "half"}:
        return 2
    if key in {"fp8", "fp8_e4m3", "fp8_e5m2", "int8"}:
        return 1
    raise ValueError(f"unknown KV cache dtype {kv_dtype!r}; use auto or fp8")
