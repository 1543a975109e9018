"""Prometheus recording and alerting rules for a fleet.

SLOs become constant series (`deepfleet:slo_ttft_seconds{model=...}`), so one alert compares
every model with its own objective and the latency dashboards draw the objective as a line.
"""

from __future__ import annotations

from typing import Any

from deepfleet.observability import names as n
from deepfleet.observability.settings import MonitoringSettings

Rule = dict[str, Any]


def _quantile(q: float, histogram: str, window: str, by: str = "model") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({histogram}_bucket[{window}])))"


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> Rule:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "service": "deepfleet"},
        "annotations": {"summary": summary, "description": description},
    }


def recording_rules(s: MonitoringSettings) -> list[Rule]:
    rules: list[Rule] = []
    for model, slo in sorted(s.slos.items()):
        for record, value in (
            (n.SLO_TTFT, slo.ttft_s),
            (n.SLO_ITL, slo.itl_s),
            (n.SLO_E2E, slo.e2e_s),
        ):
            rules.append(
                {"record": record, "expr": f"vector({value:g})", "labels": {"model": model}}
            )
    rules.append({"record": n.TTFT_P99, "expr": _quantile(0.99, n.TTFT, s.window)})
    return rules


def alerting_rules(s: MonitoringSettings) -> list[Rule]:
    w, down, for_ = s.window, s.engine_down_for, s.alert_for
    errors = f'sum by (model) (rate({n.REQUESTS}{{status=~"5.."}}[{w}]))'
    total = f"sum by (model) (rate({n.REQUESTS}[{w}]))"
    fb = f"{n.DCGM_FB_USED} / ({n.DCGM_FB_USED} + {n.DCGM_FB_FREE})"
    return [
        _alert(
            "DeepfleetEngineDown", 'up{role="engine"} == 0', down, "critical",
            "Engine {{ $labels.replica }} ({{ $labels.model }}) on {{ $labels.node }} is down",
            f"Prometheus cannot scrape {{{{ $labels.instance }}}} for {down}; the supervisor "
            "restarts it (see `deepfleet status` and the replica's log).",
        ),
        _alert(
            "DeepfleetGatewayDown", 'up{role="gateway"} == 0', down, "critical",
            "The deepfleet gateway on {{ $labels.node }} is down",
            f"Prometheus cannot scrape the gateway {{{{ $labels.instance }}}} for {down}: "
            "clients get no answer.",
        ),
        _alert(
            "DeepfleetModelNoReadyReplica",
            f"(max by (model) ({n.READY_REPLICAS}) == 0)"
            ' or (sum by (model) (up{role="engine"}) == 0)',
            down, "critical",
            "Model {{ $labels.model }} has no ready replica",
            "Every request for {{ $labels.model }} gets 503 until a replica is ready again.",
        ),
        _alert(
            "DeepfleetTTFTOverSLO", f"{n.TTFT_P99} > on (model) {n.SLO_TTFT}", for_, "warning",
            "{{ $labels.model }}: TTFT p99 {{ $value | humanizeDuration }} is over its SLO",
            f"Time to first token at the gateway, p99 over {w}, is above the model's objective "
            f"({n.SLO_TTFT}): add replicas or shed load.",
        ),
        _alert(
            "DeepfleetITLOverSLO",
            f"{_quantile(0.99, n.ITL, w)} > on (model) {n.SLO_ITL}", for_, "warning",
            "{{ $labels.model }}: inter-token latency p99 {{ $value | humanizeDuration }} "
            "is over its SLO",
            "Decoding is slower than the objective: batches are too large for the hardware.",
        ),
        _alert(
            "DeepfleetKVCacheFull", f"{n.VLLM_KV_USAGE} > {s.kv_usage_max:g}", for_, "warning",
            "KV cache of {{ $labels.replica }} is {{ $value | humanizePercentage }} full",
            "The engine preempts or queues requests when its KV cache is full: TTFT grows.",
        ),
        _alert(
            "DeepfleetEngineQueueGrowing",
            f"min_over_time({n.VLLM_WAITING}[{w}]) > 0 and deriv({n.VLLM_WAITING}[{w}]) > 0",
            for_, "warning",
            "Queue of {{ $labels.replica }} ({{ $labels.model }}) keeps growing",
            f"Requests have waited in the engine for {w} and their number rises: the replica "
            "gets more than it serves.",
        ),
        _alert(
            "DeepfleetGatewayQueueGrowing",
            f"min_over_time({n.ADMISSION_QUEUE}[{w}]) > 0 and deriv({n.ADMISSION_QUEUE}[{w}]) > 0",
            for_, "warning",
            "The gateway's admission queue keeps growing",
            "Every upstream slot is taken and waiting requests pile up: add replicas.",
        ),
        _alert(
            "DeepfleetErrorRate", f"{errors} / {total} > {s.error_ratio_max:g}", for_, "warning",
            "{{ $labels.model }}: {{ $value | humanizePercentage }} of requests fail",
            f"Share of 5xx answers at the gateway over {w} is above {s.error_ratio_max:.0%}.",
        ),
        _alert(
            "DeepfleetReplicaFlapping", f"increase({n.REPLICA_RESTARTS}[30m]) > 2", "0s",
            "warning",
            "Replica {{ $labels.replica }} restarted {{ $value }} times in 30 minutes",
            "The engine keeps crashing; its log in the state dir says why.",
        ),
        _alert(
            "DeepfleetGPUMemoryHigh", f"{fb} > {s.gpu_memory_max:g}", for_, "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} memory is "
            "{{ $value | humanizePercentage }} used",
            "Framebuffer use above what vLLM reserves: another process shares the GPU, or "
            "gpu_memory_utilization is too high.",
        ),
        _alert(
            "DeepfleetGPUTemperatureHigh", f"{n.DCGM_GPU_TEMP} > {s.gpu_temp_max_c:g}", for_,
            "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is at {{ $value }} C",
            "A hot GPU throttles its clocks; check cooling.",
        ),
    ]  # fmt: skip


def rules_file(s: MonitoringSettings) -> dict[str, Any]:
    return {
        "groups": [
            {"name": "deepfleet-recording", "interval": s.evaluation_interval,
             "rules": recording_rules(s)},
            {"name": "deepfleet-alerts", "interval": s.evaluation_interval,
             "rules": alerting_rules(s)},
        ]
    }  # fmt: skip
