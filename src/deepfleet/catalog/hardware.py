"""Hardware facts: memory, bandwidth, compute, number formats and interconnect per device type.

`memory_bytes` is what the runtime reports as the device's total (torch's `total_memory`),
which is a little below the marketing size: the H200 value is the one measured on the lent
machine (150,109,880,320 bytes; nvidia-smi says 143,771 MiB). Bandwidth and TFLOPS are the
vendors' datasheet peaks (dense, no sparsity); docs/planner.md lists the sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

GiB = 1 << 30
GB = 10**9

Vendor = Literal["nvidia", "huawei", "cpu"]


class UnknownDeviceError(ValueError):
    """The device name is not in the catalog; the message lists the names that are."""


@dataclass(frozen=True)
class Device:
    """One accelerator (or the host CPU) as the planner sees it."""

    name: str
    vendor: Vendor
    memory_bytes: int
    bandwidth: float
    """Peak memory bandwidth, bytes/s: the roofline's decode limit."""
    bf16_flops: float
    """Dense bf16 tensor throughput, FLOP/s: the roofline's compute limit."""
    fp8: bool
    """Native FP8 matmuls. Without them vLLM still runs FP8 weights on NVIDIA GPUs
    (weight-only, through the Marlin kernels); vllm-ascend does not run FP8 at all."""
    interconnect: str
    link_bandwidth: float
    """Device-to-device bandwidth inside a node, bytes/s per direction."""
    link_latency_s: float
    """Latency of one small all-reduce inside a node: the per-layer cost of TP at decode."""
    engine: str
    """The engine deepfleet runs on this device."""
    default_batched_tokens: int
    """vLLM's default max_num_batched_tokens for an API server on this device."""
    default_max_num_seqs: int
    multi_node_ep: bool = False
    """Expert parallelism across nodes has a fast all-to-all here (DeepEP on Hopper,
    vllm-ascend's on Ascend); elsewhere DP attention + EP stays inside one node."""


def _nvidia(
    name: str,
    memory_gib: float,
    bandwidth_gbs: float,
    tflops: float,
    fp8: bool,
    link: str,
    link_gbs: float,
    large: bool,
) -> Device:
    # vLLM picks 8192 batched tokens / 1024 seqs on >= 70 GiB GPUs other than the A100.
    nvlink = link.startswith("NVLink")
    return Device(
        name=name,
        vendor="nvidia",
        memory_bytes=int(memory_gib * GiB),
        bandwidth=bandwidth_gbs * GB,
        bf16_flops=tflops * 1e12,
        fp8=fp8,
        interconnect=link,
        link_bandwidth=link_gbs * GB,
        link_latency_s=8e-6 if nvlink else 25e-6,
        engine="vllm",
        default_batched_tokens=8192 if large else 2048,
        default_max_num_seqs=1024 if large else 256,
        multi_node_ep=name.startswith("H"),
    )


DEVICES: Mapping[str, Device] = MappingProxyType(
    {
        d.name: d
        for d in (
            _nvidia("A100-40GB", 39.39, 1555, 312, False, "NVLink 3", 300, large=False),
            _nvidia("A100-80GB", 79.15, 2039, 312, False, "NVLink 3", 300, large=False),
            _nvidia("H100", 79.11, 3350, 989, True, "NVLink 4", 450, large=True),
            _nvidia("H200", 150_109_880_320 / GiB, 4800, 989, True, "NVLink 4", 450, large=True),
            _nvidia("H800", 79.11, 3350, 989, True, "NVLink 4 (H800)", 200, large=True),
            _nvidia("H20", 94.97, 4000, 148, True, "NVLink 4", 450, large=True),
            _nvidia("L40S", 44.39, 864, 362, True, "PCIe 4.0 x16", 32, large=False),
            _nvidia("RTX-4090", 23.64, 1008, 165, True, "PCIe 4.0 x16", 32, large=False),
            Device(
                name="Ascend-910B",
                vendor="huawei",
                memory_bytes=64 * GiB,
                bandwidth=1600 * GB,
                bf16_flops=313e12,
                fp8=False,
                interconnect="HCCS",
                link_bandwidth=196 * GB,
                link_latency_s=15e-6,
                engine="vllm-ascend",
                default_batched_tokens=2048,
                default_max_num_seqs=256,
                multi_node_ep=True,
            ),
            Device(
                name="CPU",
                vendor="cpu",
                memory_bytes=24 * GiB,
                bandwidth=20 * GB,
                bf16_flops=0.5e12,
                fp8=False,
                interconnect="none",
                link_bandwidth=10 * GB,
                link_latency_s=50e-6,
                engine="vllm-cpu",
                default_batched_tokens=2048,
                default_max_num_seqs=128,
            ),
        )
    }
)

_ALIASES = {
    "a100": "A100-80GB",
    "a100-40g": "A100-40GB",
    "a100-80g": "A100-80GB",
    "h100-80gb": "H100",
    "h100-sxm": "H100",
    "h200-141gb": "H200",
    "h20-96gb": "H20",
    "4090": "RTX-4090",
    "rtx4090": "RTX-4090",
    "rtx-4090-24gb": "RTX-4090",
    "910b": "Ascend-910B",
    "ascend910b": "Ascend-910B",
    "ascend-910b-64gb": "Ascend-910B",
    "npu": "Ascend-910B",
}


def get_device(name: str) -> Device:
    """Look a device up by catalog name or a common alias, ignoring case, spaces and `_`."""
    key = name.strip().lower().replace(" ", "-").replace("_", "-")
    for device_name in DEVICES:
        if key == device_name.lower():
            return DEVICES[device_name]
    alias = _ALIASES.get(key) or _ALIASES.get(key.replace("-", ""))
    if alias is not None:
        return DEVICES[alias]
    raise UnknownDeviceError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")
