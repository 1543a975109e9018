"""From fleet.yaml to planner inputs: the cluster shape, the model's facts and the request.

`deepfleet up` and `deepfleet plan -f` share these, so a config plans the same way in both.
Engine arguments the config already sets (gpu_memory_utilization, max_num_seqs, ...) become
constraints of the request; what it leaves out, the plan fills.
"""

from __future__ import annotations

from typing import Any

from deepfleet.catalog import bundled
from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import ModelFacts, load_model_facts
from deepfleet.config.schema import FleetConfig, ModelSpec, ParallelSpec
from deepfleet.planner.layout import ClusterShape, PlanRequest
from deepfleet.planner.memory import Parallelism

BUNDLED_CATALOG_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_QUANTIZATION_FORMATS = {"awq": "int4", "gptq": "int4", "fp8": "fp8", "w8a8": "int8"}


def cluster_for(cfg: FleetConfig) -> ClusterShape:
    """The cluster section as a ClusterShape (raises UnknownDeviceError for unknown devices)."""
    c = cfg.cluster
    return ClusterShape(get_device(c.device), c.nodes, c.devices_per_node)


def model_facts_for(spec: ModelSpec) -> ModelFacts:
    """Facts for a model entry: the bundled model from the catalog (no conversion needed),
    otherwise its source as a folder with config.json or a catalog name."""
    if spec.is_bundled:
        return load_model_facts(BUNDLED_CATALOG_NAME)
    return load_model_facts(spec.source)


def _int(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    return int(value) if value is not None else None


def request_for(spec: ModelSpec) -> PlanRequest:
    """The plan request a model entry makes: its fixed choices, None for the rest.

    vLLM's `--dtype float32` (the bundled model's engine default) stores the weights and,
    with `kv_cache_dtype auto`, the KV cache in float32: 4 bytes each.
    """
    defaults = bundled.ENGINE_DEFAULTS if spec.is_bundled else {}
    args = {k.replace("-", "_"): v for k, v in {**defaults, **spec.engine_args}.items()}
    float32 = str(args.get("dtype", "")).lower() in {"float32", "float"}
    weight_format = spec.dtype or ("fp32" if float32 else None)
    if weight_format is None and isinstance(args.get("quantization"), str):
        weight_format = _QUANTIZATION_FORMATS.get(args["quantization"].lower())
    kv_dtype = spec.kv_cache_dtype or str(args.get("kv_cache_dtype", "auto"))
    if float32 and kv_dtype == "auto":
        kv_dtype = "float32"
    parallel = None
    if isinstance(spec.parallel, ParallelSpec):
        p = spec.parallel
        parallel = Parallelism(tp=p.tp, pp=p.pp, attn_dp=p.dp, ep=p.ep)
    utilization = args.get("gpu_memory_utilization")
    kv_space = spec.engine_env.get("VLLM_CPU_KVCACHE_SPACE")
    return PlanRequest(
        weight_format=weight_format,
        kv_dtype=kv_dtype,
        max_model_len=spec.max_model_len,
        gpu_memory_utilization=float(utilization) if utilization is not None else None,
        max_num_batched_tokens=_int(args, "max_num_batched_tokens"),
        max_num_seqs=_int(args, "max_num_seqs"),
        parallel=parallel,
        block_size=_int(args, "block_size"),
        enforce_eager=bool(args.get("enforce_eager", False)),
        cpu_kv_space_gib=int(kv_space) if kv_space else PlanRequest.cpu_kv_space_gib,
    )
