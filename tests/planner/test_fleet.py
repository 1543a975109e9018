"""fleet.yaml -> planner inputs: the config's choices become the request's constraints."""

from __future__ import annotations

from deepfleet.config import FleetConfig, ModelSpec, default_config
from deepfleet.planner import plan
from deepfleet.planner.fleet import cluster_for, model_facts_for, request_for
from deepfleet.planner.memory import Parallelism


def test_default_config_plans_the_bundled_model_on_the_cpu() -> None:
    cfg = default_config()
    result = plan(model_facts_for(cfg.models[0]), cluster_for(cfg), request_for(cfg.models[0]))
    assert cluster_for(cfg).device.name == "CPU"
    assert model_facts_for(cfg.models[0]).num_layers == 30
    assert result.recommended is not None and result.recommended.kv_cache_space_gib == 4
    # Served in float32 (the bundled model's engine default): weights and KV at 4 bytes.
    assert result.weight_format.name == "fp32"
    assert result.kv_bytes_per_token == 2 * 30 * 3 * 64 * 4


def test_spec_fields_and_engine_args_become_the_request() -> None:
    spec = ModelSpec(
        name="r1",
        source="deepseek-ai/DeepSeek-R1",
        engine="vllm",
        parallel={"tp": 8, "pp": 2},  # type: ignore[arg-type]
        max_model_len=16384,
        kv_cache_dtype="fp8",
        engine_args={"gpu-memory-utilization": 0.85, "max_num_seqs": 64, "quantization": "awq"},
        engine_env={"VLLM_CPU_KVCACHE_SPACE": "2"},
    )
    request = request_for(spec)
    assert request.parallel == Parallelism(tp=8, pp=2)
    assert (request.max_model_len, request.kv_dtype) == (16384, "fp8")
    assert (request.gpu_memory_utilization, request.max_num_seqs) == (0.85, 64)
    assert request.weight_format == "int4" and request.cpu_kv_space_gib == 2


def test_fixed_config_layout_is_judged_as_written() -> None:
    cfg = FleetConfig.model_validate(
        {
            "cluster": {"nodes": 1, "devices_per_node": 8, "device": "H200"},
            "models": [
                {
                    "name": "r1",
                    "source": "DeepSeek-R1",
                    "engine": "vllm",
                    "parallel": {"tp": 4, "pp": 1},
                }
            ],
        }
    )
    result = plan(model_facts_for(cfg.models[0]), cluster_for(cfg), request_for(cfg.models[0]))
    assert len(result.layouts) == 1 and result.layouts[0].tp == 4
    assert result.recommended is None
    assert result.alternatives and result.alternatives[0].layout.feasible
