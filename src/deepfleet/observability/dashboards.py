"""The Grafana dashboards, as data: fleet overview, latency, KV cache, replicas, reasoning and
GPUs. Every query names its metrics through `names`, so a renamed metric breaks a test here,
not a graph in production."""

from __future__ import annotations

from deepfleet.observability import names as n
from deepfleet.observability.panels import (
    MODEL,
    RATE,
    REPLICA,
    Dashboard,
    Panel,
    Query,
    p50_p99,
    quantile,
    rate,
    ratio,
    zero_when_absent,
)

ENGINE = f"{MODEL}, {REPLICA}"
ERRORS = f'{MODEL}, status=~"5.."'


def _slo(record: str) -> Query:
    return Query(f"{record}{{{MODEL}}}", "{{model}} SLO", slo=True)


OVERVIEW = Dashboard(
    "deepfleet-overview",
    "deepfleet / Fleet overview",
    "Is every model served, how much traffic, how many errors.",
    (
        Panel("Ready replicas", "Replicas the gateway routes to, per model.",
              (Query(f"max by (model) ({n.READY_REPLICAS}{{{MODEL}}})", "{{model}}"),),
              kind="stat", healthy_from=1),
        Panel("Engines up", "Engine targets Prometheus scrapes, per model.",
              (Query(f'sum by (model) (up{{role="engine", {MODEL}}})', "{{model}}"),),
              kind="stat", healthy_from=1),
        Panel("Requests/s", "Requests finished at the gateway.",
              (Query(f"sum ({rate(n.REQUESTS)})", "requests/s"),), unit="reqps", kind="stat"),
        Panel("Error ratio", "Share of 5xx answers at the gateway.",
              (Query(f"({rate(n.REQUESTS, ERRORS)} or {rate(n.REQUESTS)} * 0)"
                     f" / {rate(n.REQUESTS)}", "{{model}}"),),
              unit="percentunit", kind="stat", threshold=0.05),
        Panel("Requests/s by status", "Finished requests by model and HTTP status.",
              (Query(rate(n.REQUESTS, by="model, status"), "{{model}} {{status}}"),),
              unit="reqps"),
        Panel("Tokens/s in and out", "Prompt and output tokens through the gateway.",
              (Query(rate(n.PROMPT_TOKENS), "{{model}} in"),
               Query(rate(n.OUTPUT_TOKENS), "{{model}} out")),
              unit="short"),
        Panel("Errors/s", "5xx answers by model and status (503: no ready replica).",
              (Query(zero_when_absent(rate(n.REQUESTS, ERRORS, "model, status")),
                     "{{model}} {{status}}"),),
              unit="reqps"),
        Panel("Rejected before routing", "Refused by the gateway: auth, limits, bad requests.",
              (Query(zero_when_absent(f"sum by (reason) (rate({n.REJECTED}[{RATE}]))"),
                     "{{reason}}"),),
              unit="reqps"),
        Panel("Replicas: desired vs ready", "What the autoscaler wants (a fixed count: what "
              "runs) against the replicas ready, per model; 0 desired: scaled to zero (cold).",
              (Query(f"max by (model) ({n.REPLICAS_DESIRED}{{{MODEL}}})", "{{model}} desired"),
               Query(f"max by (model) ({n.REPLICAS_READY}{{{MODEL}}})", "{{model}} ready"))),
        Panel("Last scaling decision", "The autoscaler's last decision and its reason, per "
              "model (the controller log has each decision with its inputs).",
              (Query(f"max by (model, reason) ({n.AUTOSCALE_DECISION}{{{MODEL}}})",
                     "{{model}}: {{reason}}"),),
              kind="stat"),
    ),
)  # fmt: skip

LATENCY = Dashboard(
    "deepfleet-latency",
    "deepfleet / Latency",
    "What users feel at the gateway (p50, p99 and the SLO), and where the time goes in engines.",
    (
        Panel("Time to first token", "Gateway receive to first byte relayed.",
              (*p50_p99(n.TTFT, "TTFT"), _slo(n.SLO_TTFT)), unit="s"),
        Panel("Inter-token latency", "Mean gap between streamed events (one sample a request).",
              (*p50_p99(n.ITL, "ITL"), _slo(n.SLO_ITL)), unit="s"),
        Panel("End-to-end latency", "Gateway receive to last byte relayed.",
              (*p50_p99(n.E2E, "E2E"), _slo(n.SLO_E2E)), unit="s"),
        Panel("Engine TTFT p99 by replica", "Inside the engine, without the gateway.",
              (Query(quantile(0.99, n.VLLM_TTFT, ENGINE, "replica"), "{{replica}}"),), unit="s"),
        Panel("Engine ITL p99 by replica", "Time per output token inside the engine.",
              (Query(quantile(0.99, n.VLLM_ITL, ENGINE, "replica"), "{{replica}}"),), unit="s"),
        Panel("Engine queue time p99 by replica", "Waiting for a batch slot in the engine.",
              (Query(quantile(0.99, n.VLLM_QUEUE_TIME, ENGINE, "replica"), "{{replica}}"),),
              unit="s"),
    ),
    variables=("model", "replica"),
)  # fmt: skip

KV_CACHE = Dashboard(
    "deepfleet-kv-cache",
    "deepfleet / KV cache",
    "How full each engine's KV cache is, how often prompts hit it, and how routing uses it.",
    (
        Panel("KV cache usage", "Share of KV blocks in use; the alert fires above 95%.",
              (Query(f"max by (replica) ({n.VLLM_KV_USAGE}{{{ENGINE}}})", "{{replica}}"),),
              unit="percentunit", threshold=0.95),
        Panel("Prefix cache hit rate by replica", "Prompt tokens found cached / looked up.",
              (Query(ratio(n.VLLM_PREFIX_HITS, n.VLLM_PREFIX_QUERIES, ENGINE, "replica"),
                     "{{replica}}"),),
              unit="percentunit"),
        Panel("Prefix hit rate: routed vs measured",
              "Predicted by the KV-aware router (blocks the chosen replica held, by the KV "
              "index) against what the engines found (tokens).",
              (Query(ratio(n.ROUTING_MATCHED_BLOCKS, n.ROUTING_PROMPT_BLOCKS),
                     "{{model}} predicted"),
               Query(ratio(n.VLLM_PREFIX_HITS, n.VLLM_PREFIX_QUERIES), "{{model}} measured")),
              unit="percentunit"),
        Panel("Routing decisions", "Why the router chose an endpoint, per second.",
              (Query(rate(n.ROUTING_DECISIONS, by="policy, reason"), "{{policy}} {{reason}}"),),
              unit="reqps"),
        Panel("KV index", "Distinct blocks and (replica, block) entries in the global index.",
              (Query(f"max ({n.KV_INDEX_BLOCKS})", "blocks"),
               Query(f"max ({n.KV_INDEX_ENTRIES})", "entries"))),
        Panel("KV event lag and resyncs",
              "Engine batch to applied in the index (p99), and sequence gaps closed per second.",
              (Query(f"histogram_quantile(0.99, sum by (le) (rate({n.KV_EVENT_LAG}_bucket"
                     f"[{RATE}])))", "lag p99 (s)"),
               Query(zero_when_absent(f"sum by (replica, how) (rate({n.KV_EVENT_RESYNCS}"
                                      f"{{{REPLICA}}}[{RATE}]))"), "{{replica}} resync {{how}}"))),
        Panel("Preemptions/s", "Requests the engine evicted for lack of KV blocks.",
              (Query(rate(n.VLLM_PREEMPTIONS, ENGINE, "replica"), "{{replica}}"),)),
    ),
    variables=("model", "replica"),
)  # fmt: skip

REPLICAS = Dashboard(
    "deepfleet-replicas",
    "deepfleet / Replicas",
    "Load, queue, throughput and restarts of each replica.",
    (
        Panel("Running requests", "Requests in the engine's batch (load).",
              (Query(f"sum by (replica) ({n.VLLM_RUNNING}{{{ENGINE}}})", "{{replica}}"),)),
        Panel("Waiting requests", "Requests queued inside the engine.",
              (Query(f"sum by (replica) ({n.VLLM_WAITING}{{{ENGINE}}})", "{{replica}}"),)),
        Panel("Gateway in flight", "Requests the gateway has open to each replica.",
              (Query(f"sum by (replica) ({n.IN_FLIGHT}{{{REPLICA}}})", "{{replica}}"),)),
        Panel("Generated tokens/s", "Output tokens per second per replica.",
              (Query(rate(n.VLLM_GENERATION_TOKENS, ENGINE, "replica"), "{{replica}} out"),
               Query(rate(n.VLLM_PROMPT_TOKENS, ENGINE, "replica"), "{{replica}} in"))),
        Panel("Up", "1 while Prometheus can scrape the engine.",
              (Query(f'max by (replica) (up{{role="engine", {ENGINE}}})', "{{replica}}"),),
              kind="stat", healthy_from=1),
        Panel("State", "The controller's view of each replica.",
              (Query(f"max by (replica, state) ({n.REPLICA_STATE}{{{ENGINE}}}) == 1",
                     "{{replica}}: {{state}}"),),
              kind="stat"),
        Panel("Restarts", "Engine restarts by its supervisor since the controller started.",
              (Query(f"max by (replica) ({n.REPLICA_RESTARTS}{{{ENGINE}}})", "{{replica}}"),),
              kind="stat", threshold=1),
        Panel("Ejections and retries", "Failures before the first byte: the replica is "
              "ejected and the request retried elsewhere.",
              (Query(zero_when_absent(f"sum by (replica) (rate({n.EJECTIONS}{{{REPLICA}}}"
                                      f"[{RATE}]))"), "{{replica}} ejected"),
               Query(zero_when_absent(rate(n.RETRIES)), "{{model}} retried")),
              unit="reqps"),
    ),
    variables=("model", "replica"),
)  # fmt: skip

REASONING = Dashboard(
    "deepfleet-reasoning",
    "deepfleet / Reasoning",
    "Thinking (reasoning) tokens against answer tokens, as the gateway counts them.",
    (
        Panel("Thinking vs answer tokens/s", "Output tokens split by the reasoning parser.",
              (Query(rate(f"{n.REASONING_TOKENS}_sum"), "{{model}} thinking"),
               Query(rate(f"{n.ANSWER_TOKENS}_sum"), "{{model}} answer"))),
        Panel("Thinking share", "Thinking tokens / all output tokens.",
              (Query(f"{rate(f'{n.REASONING_TOKENS}_sum')} / ({rate(f'{n.REASONING_TOKENS}_sum')}"
                     f" + {rate(f'{n.ANSWER_TOKENS}_sum')})", "{{model}}"),),
              unit="percentunit"),
        Panel("Thinking tokens per request", "Distribution over requests.",
              p50_p99(n.REASONING_TOKENS, "thinking")),
        Panel("Answer tokens per request", "Distribution over requests.",
              p50_p99(n.ANSWER_TOKENS, "answer")),
        Panel("Streams cut by the reasoning cap", "Requests whose thinking hit the cap.",
              (Query(zero_when_absent(rate(n.REASONING_CAPPED)), "{{model}}"),), unit="reqps"),
    ),
)  # fmt: skip

_GPU = "{{Hostname}} GPU {{gpu}}"
GPUS = Dashboard(
    "deepfleet-gpus",
    "deepfleet / GPUs",
    "NVIDIA dcgm-exporter on each GPU node: memory, temperature, utilization, power.",
    (
        Panel("GPU memory used", "Framebuffer used / total; vLLM reserves most of it up front.",
              (Query(f"{n.DCGM_FB_USED} / ({n.DCGM_FB_USED} + {n.DCGM_FB_FREE})", _GPU),),
              unit="percentunit", threshold=0.97),
        Panel("GPU temperature", "Degrees Celsius.",
              (Query(n.DCGM_GPU_TEMP, _GPU),), unit="celsius", threshold=85),
        Panel("GPU utilization", "Share of time a kernel ran.",
              (Query(n.DCGM_GPU_UTIL, _GPU),), unit="percent"),
        Panel("GPU power", "Watts.", (Query(n.DCGM_POWER, _GPU),), unit="watt"),
    ),
    variables=(),
)  # fmt: skip

DASHBOARDS = (OVERVIEW, LATENCY, KV_CACHE, REPLICAS, REASONING, GPUS)
