"""Every metric name the dashboards, alert rules and `deepfleet top` read, in one place.

Names are as Prometheus stores them (counters carry `_total`; histograms are queried through
`_bucket`, `_sum` and `_count`). Four groups:

- VLLM: the engine's own metrics (vllm/v1/metrics/loggers.py, vLLM 0.32); labels `model_name`
  and `engine` from vLLM, plus `model`, `replica`, `node`, `role` from service discovery.
- GATEWAY: what `deepfleet.gateway.metrics.GatewayMetrics` exports today.
- FLEET: the fleet state (fleet.json) as metrics, served next to /sd/targets (`fleet_metrics`).
- PENDING: names the KV routing layer defines (deepfleet.routing.metrics) that the gateway does
  not serve yet. Dashboards already show them; the "every panel returns data" test skips
  exactly the queries that read these.
- DCGM: NVIDIA's dcgm-exporter (GPU memory, temperature), present only on GPU nodes.
"""

from __future__ import annotations

# -- vLLM engine (labels: model_name, engine) --------------------------------------------------
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV_USAGE = "vllm:kv_cache_usage_perc"  # 0..1
VLLM_PREFIX_QUERIES = "vllm:prefix_cache_queries_total"  # tokens looked up
VLLM_PREFIX_HITS = "vllm:prefix_cache_hits_total"  # tokens found cached
VLLM_PREEMPTIONS = "vllm:num_preemptions_total"
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"
VLLM_REQUEST_SUCCESS = "vllm:request_success_total"  # label finished_reason
VLLM_TTFT = "vllm:time_to_first_token_seconds"  # histogram
VLLM_ITL = "vllm:inter_token_latency_seconds"  # histogram
VLLM_E2E = "vllm:e2e_request_latency_seconds"  # histogram
VLLM_QUEUE_TIME = "vllm:request_queue_time_seconds"  # histogram

VLLM = (
    VLLM_RUNNING, VLLM_WAITING, VLLM_KV_USAGE, VLLM_PREFIX_QUERIES, VLLM_PREFIX_HITS,
    VLLM_PREEMPTIONS, VLLM_PROMPT_TOKENS, VLLM_GENERATION_TOKENS, VLLM_REQUEST_SUCCESS,
    VLLM_TTFT, VLLM_ITL, VLLM_E2E, VLLM_QUEUE_TIME,
)  # fmt: skip

# -- gateway (deepfleet.gateway.metrics) --------------------------------------------------------
REQUESTS = "deepfleet_requests_total"  # labels model, status (HTTP code), key
TTFT = "deepfleet_time_to_first_token_seconds"  # histogram, label model
ITL = "deepfleet_inter_token_latency_seconds"  # histogram, label model
E2E = "deepfleet_request_duration_seconds"  # histogram, label model
PROMPT_TOKENS = "deepfleet_prompt_tokens_total"  # label model
OUTPUT_TOKENS = "deepfleet_output_tokens_total"  # label model
REASONING_TOKENS = "deepfleet_reasoning_tokens"  # histogram per request, label model
ANSWER_TOKENS = "deepfleet_answer_tokens"  # histogram per request, label model
REASONING_CAPPED = "deepfleet_reasoning_capped_total"  # label model
RETRIES = "deepfleet_upstream_retries_total"  # label model
EJECTIONS = "deepfleet_replica_ejections_total"  # label replica
REJECTED = "deepfleet_rejected_total"  # label reason
ADMISSION_QUEUE = "deepfleet_admission_queue_depth"
IN_FLIGHT = "deepfleet_in_flight_requests"  # label replica
READY_REPLICAS = "deepfleet_ready_replicas"  # label model

GATEWAY = (
    REQUESTS, TTFT, ITL, E2E, PROMPT_TOKENS, OUTPUT_TOKENS, REASONING_TOKENS, ANSWER_TOKENS,
    REASONING_CAPPED, RETRIES, EJECTIONS, REJECTED, ADMISSION_QUEUE, IN_FLIGHT, READY_REPLICAS,
)  # fmt: skip

# -- fleet state (deepfleet.observability.fleet_metrics, served at /metrics/fleet) -------------
REPLICA_STATE = (
    "deepfleet_replica_state"  # 1 for the current state; labels replica, model, node, state
)
REPLICA_RESTARTS = "deepfleet_replica_restarts_total"  # labels replica, model, node

REPLICAS_DESIRED = "deepfleet_replicas_desired"  # label model
REPLICAS_READY = "deepfleet_replicas_ready"  # label model; ready and not draining
AUTOSCALE_DECISION = "deepfleet_autoscale_decision"  # 1; labels model, reason

FLEET = (REPLICA_STATE, REPLICA_RESTARTS, REPLICAS_DESIRED, REPLICAS_READY, AUTOSCALE_DECISION)

# -- pending: the KV routing layer (deepfleet.routing.metrics.RoutingMetrics), not yet served
# by the gateway's /metrics ------------------------------------------------------------------
# Every routing decision; reason says why the endpoint won (prefix, load, spill, single, order).
ROUTING_DECISIONS = "deepfleet_routing_decisions_total"  # labels model, policy, reason
# Full KV blocks of routed prompts, and of those the blocks the chosen replica held according to
# the KV index: matched / prompt is the router's predicted prefix hit rate. Label model.
ROUTING_PROMPT_BLOCKS = "deepfleet_routing_prompt_blocks_total"
ROUTING_MATCHED_BLOCKS = "deepfleet_routing_matched_blocks_total"
KV_INDEX_BLOCKS = "deepfleet_kv_index_blocks"  # distinct blocks in the global index
KV_INDEX_ENTRIES = "deepfleet_kv_index_entries"  # (replica, block) entries
KV_EVENT_LAG = "deepfleet_kv_event_lag_seconds"  # histogram: engine batch to applied in the index
KV_EVENT_RESYNCS = "deepfleet_kv_event_resyncs_total"  # labels replica, how

PENDING = (
    ROUTING_DECISIONS, ROUTING_PROMPT_BLOCKS, ROUTING_MATCHED_BLOCKS, KV_INDEX_BLOCKS,
    KV_INDEX_ENTRIES, KV_EVENT_LAG, KV_EVENT_RESYNCS,
)  # fmt: skip

# -- NVIDIA dcgm-exporter (labels gpu, UUID, Hostname, modelName) -------------------------------
DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
DCGM_FB_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
DCGM_GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"  # degrees C
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent
DCGM_POWER = "DCGM_FI_DEV_POWER_USAGE"  # watts

DCGM = (DCGM_FB_USED, DCGM_FB_FREE, DCGM_GPU_TEMP, DCGM_GPU_UTIL, DCGM_POWER)

# -- recording rules (deepfleet.observability.rules) --------------------------------------------
SLO_TTFT = "deepfleet:slo_ttft_seconds"  # one constant series per model
SLO_ITL = "deepfleet:slo_itl_seconds"
SLO_E2E = "deepfleet:slo_e2e_seconds"
TTFT_P99 = "deepfleet:ttft_seconds:p99"  # by model, over 5m

RECORDED = (SLO_TTFT, SLO_ITL, SLO_E2E, TTFT_P99)

PROMETHEUS = ("up",)

ALL = frozenset((*VLLM, *GATEWAY, *FLEET, *PENDING, *DCGM, *RECORDED, *PROMETHEUS))
