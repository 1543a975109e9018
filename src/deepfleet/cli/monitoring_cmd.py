"""`deepfleet render monitoring`: Prometheus config, alert rules and Grafana dashboards.

A gateway on a non-loopback host wants a bearer token on /metrics and /sd/targets; when the
config sets no `gateway.metrics_token`, the gateway uses the state dir's 0600 metrics_token
(generated on first use). The rendered Prometheus gets that same token (read, or made now so
a gateway started later uses it too), else every scrape would answer 401.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from deepfleet.cli.common import FILE_OPT, STATE_OPT, fail, load_config, out, resolve_state_dir
from deepfleet.config import FleetConfig
from deepfleet.fleet.files import METRICS_TOKEN_FILE, metrics_token
from deepfleet.net import is_loopback
from deepfleet.observability.render import render_monitoring, settings_for
from deepfleet.observability.settings import Slo

# Prometheus's duration syntax (model.ParseDuration).
DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")


def _duration(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    if not value or not DURATION.match(value):
        fail(f"{option}: {value!r} is not a Prometheus duration (e.g. 15s, 1m, 1h30m)")
    return value


def _generated_token(cfg: FleetConfig, state_dir: Path) -> str | None:
    """The state dir's metrics token when the gateway needs one the config does not give."""
    if cfg.gateway.metrics_token or is_loopback(cfg.gateway.host):
        return None
    try:
        token = metrics_token(state_dir)
    except OSError as exc:
        fail(
            f"gateway.metrics_token is not set and the gateway's host {cfg.gateway.host} is not "
            f"loopback: cannot read or create {state_dir / METRICS_TOKEN_FILE} ({exc}); set "
            "gateway.metrics_token, or give --state-dir"
        )
    out.print(f"metrics token: {state_dir / METRICS_TOKEN_FILE} (the gateway's, generated)")
    return token


def monitoring(
    output: Path = typer.Option(
        ..., "-o", "--out", help="Folder to write into (created; files there are replaced)."
    ),
    file: Path | None = FILE_OPT,
    gateway_url: str | None = typer.Option(
        None,
        "--gateway-url",
        help="Where Prometheus reaches the gateway (default: the config's gateway address).",
    ),
    prometheus_url: str | None = typer.Option(
        None,
        "--prometheus-url",
        help="Where Grafana reaches Prometheus (default: 127.0.0.1 at deploy.monitoring's port).",
    ),
    scrape_interval: str | None = typer.Option(
        None, "--scrape-interval", help="Default: deploy.monitoring.scrape_interval_s."
    ),
    evaluation_interval: str | None = typer.Option(
        None, "--evaluation-interval", help="Default: the scrape interval."
    ),
    ttft_slo: float = typer.Option(2.0, "--ttft-slo", help="TTFT p99 objective, seconds."),
    itl_slo: float = typer.Option(0.2, "--itl-slo", help="Inter-token p99 objective, seconds."),
    e2e_slo: float = typer.Option(120.0, "--e2e-slo", help="End-to-end p99 objective, seconds."),
    engine_down_for: str = typer.Option(
        "1m", "--engine-down-for", help="How long an engine may be down before it alerts."
    ),
    alert_for: str = typer.Option(
        "5m", "--alert-for", help="How long other conditions hold before they alert."
    ),
    dcgm: list[str] = typer.Option(
        [],
        "--dcgm",
        help="host:port of an NVIDIA dcgm-exporter, repeatable (default: port 9400 on every "
        "deploy.nodes address of an NVIDIA fleet).",
    ),
    alertmanager: list[str] = typer.Option(
        [], "--alertmanager", help="host:port of an Alertmanager (repeatable)."
    ),
    dashboards_path: str | None = typer.Option(
        None,
        "--dashboards-path",
        help="Where Grafana will find the dashboards (default: OUTPUT/grafana/dashboards).",
    ),
    state_dir: Path | None = STATE_OPT,
) -> None:
    """Prometheus config (service discovery from the gateway), alerts and Grafana dashboards."""
    if min(ttft_slo, itl_slo, e2e_slo) <= 0:
        fail("SLOs must be positive numbers of seconds")
    cfg = load_config(file)
    settings = settings_for(
        cfg,
        Slo(ttft_s=ttft_slo, itl_s=itl_slo, e2e_s=e2e_slo),
        gateway_url=gateway_url,
        prometheus_url=prometheus_url,
        scrape_interval=_duration(scrape_interval, "--scrape-interval"),
        evaluation_interval=_duration(
            evaluation_interval or scrape_interval, "--evaluation-interval"
        ),
        engine_down_for=_duration(engine_down_for, "--engine-down-for"),
        alert_for=_duration(alert_for, "--alert-for"),
        dcgm_targets=tuple(dcgm) or None,
        alertmanagers=tuple(alertmanager),
        dashboards_path=dashboards_path,
        metrics_token=_generated_token(cfg, resolve_state_dir(cfg, state_dir)),
    )
    written = render_monitoring(settings, output)
    for path in written:
        out.print(str(path))
    root = output.resolve()
    out.print(
        f"\nPrometheus: prometheus --config.file={root / 'prometheus.yml'}\n"
        f"Grafana:    GF_PATHS_PROVISIONING={root / 'grafana' / 'provisioning'} grafana-server"
    )


def register_render(render_app: typer.Typer) -> None:
    """Add `monitoring` to the `deepfleet render` sub-app."""
    render_app.command("monitoring")(monitoring)
