"""Checks of every model's `disaggregation:` section against its engine, its model and the
cluster (config.disagg.problems), with the model's facts from the catalog.

A model whose facts cannot be read here (a hub id outside the catalog, fetched by the engine
itself) is checked for what does not need them; its MoE and MLA questions are left to the
engine, which refuses at start.

What the launchers need besides: the pools' layouts replace the model's `parallel`; the KV
connector takes vLLM's one `--kv-transfer-config`, which `kv_cache.offload` also needs; and
the shared-storage connector's folder must be one every engine sees, which only a one-host
fleet (its state dir) gives without being told.
"""

from __future__ import annotations

from deepfleet.catalog.models import ModelFactsError, load_model_facts
from deepfleet.config.disagg import connector_for, problems
from deepfleet.config.schema import FleetConfig, ModelSpec

BUNDLED_FACTS = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _moe_mla(m: ModelSpec) -> tuple[bool, bool]:
    try:
        facts = load_model_facts(BUNDLED_FACTS if m.is_bundled else m.source)
    except ModelFactsError:
        return True, True
    return facts.moe is not None, facts.mla is not None


def disaggregation_problems(cfg: FleetConfig) -> list[str]:
    found: list[str] = []
    devices = 0 if cfg.cluster.device == "CPU" else cfg.cluster.nodes * cfg.cluster.devices_per_node
    for i, m in enumerate(cfg.models):
        if m.disaggregation is None:
            continue
        if "replicas" in m.model_fields_set:
            found.append(
                f"models[{i}].replicas: a disaggregated model sets replicas per pool "
                "(disaggregation.prefill.replicas and disaggregation.decode.replicas)"
            )
        if "parallel" in m.model_fields_set:
            found.append(
                f"models[{i}].parallel: a disaggregated model sets its layout per pool "
                "(disaggregation.prefill and disaggregation.decode: tensor_parallel_size, "
                "data_parallel_size, expert_parallel)"
            )
        found += _launch_problems(cfg, i, m)
        moe, mla = _moe_mla(m)
        found += problems(i, m.engine, m.disaggregation, moe, mla, devices)
    return found


def _launch_problems(cfg: FleetConfig, i: int, m: ModelSpec) -> list[str]:
    assert m.disaggregation is not None
    found = []
    if cfg.kv_cache.offload != "none" and m.engine in ("vllm", "vllm-ascend"):
        found.append(
            f"models[{i}].disaggregation: kv_cache.offload {cfg.kv_cache.offload} and the P/D "
            "connector both need the engine's one --kv-transfer-config; set kv_cache.offload: "
            "none, or serve the model aggregated"
        )
    shared = m.engine in ("vllm", "vllm-cpu") and connector_for(m.engine, m.disaggregation)
    if (
        shared == "shared-storage"
        and cfg.cluster.mode != "local"
        and m.disaggregation.shared_storage_path is None
    ):
        found.append(
            f"models[{i}].disaggregation.shared_storage_path: cluster.mode {cfg.cluster.mode} "
            "runs engines on several hosts; name a folder every node mounts"
        )
    return found
