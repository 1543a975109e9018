"""The planner: memory, KV cache and speed of a model on a cluster, from its architecture.

Pure functions over small frozen dataclasses; the only I/O is the catalog reading a
config.json. Entry points:

- `plan(model, cluster, request) -> Plan`: every layout judged and ranked, `Plan.recommended`
  (None when nothing fits, then `Plan.alternatives` says what would).
- `cpu_kv_capacity(model, kv_space_gib, max_model_len)`: the KV tokens vLLM's CPU build gets
  from VLLM_CPU_KVCACHE_SPACE.
- `count_params`, `model_weight_bytes`, `kv_bytes_per_token`: the model's own numbers.
"""

from deepfleet.planner.formats import FORMATS, WeightFormat, get_format, kv_dtype_bytes
from deepfleet.planner.kv import KvCapacity, cpu_kv_capacity, kv_bytes_per_token, kv_capacity
from deepfleet.planner.layout import ClusterShape, Layout, PlanRequest
from deepfleet.planner.memory import DeviceMemory, Parallelism
from deepfleet.planner.params import ParamCount, count_params
from deepfleet.planner.plan import Alternative, Plan, model_weight_bytes, plan
from deepfleet.planner.roofline import DecodeEstimate, Network, decode_estimate, experts_touched

__all__ = [
    "FORMATS",
    "Alternative",
    "ClusterShape",
    "DecodeEstimate",
    "DeviceMemory",
    "KvCapacity",
    "Layout",
    "Network",
    "Parallelism",
    "ParamCount",
    "Plan",
    "PlanRequest",
    "WeightFormat",
    "count_params",
    "cpu_kv_capacity",
    "decode_estimate",
    "experts_touched",
    "get_format",
    "kv_bytes_per_token",
    "kv_capacity",
    "kv_dtype_bytes",
    "model_weight_bytes",
    "plan",
]
