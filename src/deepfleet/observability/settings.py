"""What the monitoring files are rendered from: where things are, SLOs and alert thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Slo:
    """Latency objectives of one model, as the gateway measures them (p99)."""

    ttft_s: float = 2.0
    itl_s: float = 0.2
    e2e_s: float = 120.0


@dataclass(frozen=True)
class MonitoringSettings:
    gateway_url: str
    """Where Prometheus reaches the gateway (its /sd/targets, /metrics and /metrics/fleet)."""
    slos: dict[str, Slo] = field(default_factory=dict)
    """Per model name; every model of the fleet should have one."""
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    engine_down_for: str = "1m"
    """How long an engine (or the gateway, or a model's last replica) may be down before its
    alert fires."""
    alert_for: str = "5m"
    """How long the other conditions must hold before their alerts fire."""
    window: str = "5m"
    """Range of the rates and quantiles the alerts read."""
    kv_usage_max: float = 0.95
    error_ratio_max: float = 0.05
    gpu_memory_max: float = 0.97
    """vLLM reserves gpu_memory_utilization (0.9 by default) of each GPU up front, so framebuffer
    use near 90% is normal; the alert is for what comes on top."""
    gpu_temp_max_c: float = 85.0
    dcgm_targets: tuple[str, ...] = ()
    """host:port of NVIDIA dcgm-exporter on each GPU node (port 9400 by default)."""
    alertmanagers: tuple[str, ...] = ()
    metrics_token: str | None = None
    """The gateway's metrics token; Prometheus then reads it from a file beside its config."""
    prometheus_url: str = "http://127.0.0.1:9090"
    """Where Grafana reaches Prometheus (the provisioned datasource)."""
    dashboards_path: str | None = None
    """Where Grafana finds the dashboard JSON files; None: the rendered folder's absolute path."""
