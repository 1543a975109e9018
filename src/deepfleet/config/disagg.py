"""A model's `disaggregation:` section: prefill and decode on separate engine pools.

Prefill engines compute prompts and hand their KV cache to decode engines through a KV
connector; the gateway runs the two phases (deepfleet.gateway.pd). Which connector exists
depends on the engine (and so the platform), as vLLM and its plugins ship them today:

- vllm (NVIDIA): NixlConnector (`nixl`, the default: GPU memory to GPU memory over UCX/RDMA),
  MooncakeConnector (`mooncake`), LMCacheConnectorV1 (`lmcache`), ExampleConnector
  (`shared-storage`: safetensors files in a folder both engines see; a reference, slow).
- vllm-ascend (Huawei): its own MooncakeConnectorV1 (`mooncake`, the default) and LMCache;
  NIXL has no Ascend backend.
- vllm-cpu: only `shared-storage` (the default). NIXL, Mooncake and LMCache move device
  memory; the CPU build ships none of their transports.
- sglang and mindie: their own P/D modes, which deepfleet does not launch (refused).

`problems()` returns what cannot run, one line per finding naming the field; config.load
reports them with the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from deepfleet.config.base import Strict

Connector = Literal["auto", "nixl", "mooncake", "lmcache", "shared-storage"]

CONNECTORS: dict[str, tuple[str, ...]] = {
    "vllm": ("nixl", "mooncake", "lmcache", "shared-storage"),
    "vllm-ascend": ("mooncake", "lmcache"),
    "vllm-cpu": ("shared-storage",),
}
"""Connectors each engine can run, its default (what `auto` picks) first."""


class PoolSpec(Strict):
    replicas: int = Field(1, ge=1, le=1024, description="Engines in this pool.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="TP size of each engine.")
    data_parallel_size: int = Field(
        1,
        ge=1,
        le=1024,
        description="Data-parallel attention ranks of each engine (MLA models: DeepSeek-V3/R1).",
    )
    expert_parallel: bool = Field(
        False, description="Spread the MoE experts over the engine's ranks (MoE models only)."
    )

    @property
    def devices(self) -> int:
        """Devices one engine of the pool uses."""
        return self.tensor_parallel_size * self.data_parallel_size


class DisaggregationSpec(Strict):
    prefill: PoolSpec = Field(default_factory=PoolSpec, description="The prefill pool.")
    decode: PoolSpec = Field(default_factory=PoolSpec, description="The decode pool.")
    connector: Connector = Field(
        "auto",
        description="KV transfer from prefill to decode engines: nixl, mooncake, lmcache, "
        "shared-storage; `auto`: the engine's default (nixl on NVIDIA, mooncake on Ascend, "
        "shared-storage on the CPU build).",
    )
    shared_storage_path: Path | None = Field(
        None,
        description="Folder both pools read and write for `shared-storage`; None: a folder "
        "in the fleet's state dir (one host only).",
    )


def connector_for(engine: str, spec: DisaggregationSpec) -> str:
    """The connector `spec` resolves to on `engine` (`auto` -> the engine's default)."""
    if spec.connector != "auto":
        return spec.connector
    return CONNECTORS[engine][0]


def problems(
    index: int, engine: str, spec: DisaggregationSpec, moe: bool, mla: bool, devices: int
) -> list[str]:
    """Why models[index].disaggregation cannot run on `engine` for a model that is (or not)
    MoE / MLA, in a cluster of `devices` devices (0: do not count); one line each."""
    at = f"models[{index}].disaggregation"
    if engine not in CONNECTORS:
        return [
            f"{at}: engine {engine!r} has no KV connector deepfleet launches (use one of "
            f"{', '.join(CONNECTORS)})"
        ]
    found = []
    if spec.connector != "auto" and spec.connector not in CONNECTORS[engine]:
        found.append(
            f"{at}.connector: {spec.connector} does not run on {engine} (it has "
            f"{', '.join(CONNECTORS[engine])}; `auto` picks {CONNECTORS[engine][0]})"
        )
    if spec.shared_storage_path is not None and connector_for(engine, spec) != "shared-storage":
        found.append(f"{at}.shared_storage_path: only the shared-storage connector reads it")
    for role in ("prefill", "decode"):
        pool: PoolSpec = getattr(spec, role)
        if pool.expert_parallel and not moe:
            found.append(f"{at}.{role}.expert_parallel: the model has no experts (not a MoE model)")
        if pool.data_parallel_size > 1 and not mla:
            found.append(
                f"{at}.{role}.data_parallel_size: DP attention pays only on MLA models "
                "(DeepSeek-V2/V3/R1), whose KV cache is not split by TP; use replicas instead"
            )
        if engine == "vllm-cpu" and pool.devices > 1:
            found.append(
                f"{at}.{role}: the CPU build runs one rank per engine (tensor_parallel_size "
                "and data_parallel_size 1)"
            )
    used = spec.prefill.replicas * spec.prefill.devices + spec.decode.replicas * spec.decode.devices
    if devices and used > devices:
        found.append(
            f"{at}: prefill {spec.prefill.replicas} x {spec.prefill.devices} + decode "
            f"{spec.decode.replicas} x {spec.decode.devices} devices = {used}, the cluster has "
            f"{devices}"
        )
    return found
