"""prometheus.yml for a fleet: engines and the gateway from the gateway's HTTP service
discovery, the fleet state and DCGM exporters as static targets."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from deepfleet.observability.sd import FLEET_METRICS_PATH, SD_PATH
from deepfleet.observability.settings import MonitoringSettings

RULES_FILE = "rules/deepfleet.rules.yml"
TOKEN_FILE = "metrics_token"


def _auth(s: MonitoringSettings) -> dict[str, Any]:
    """Bearer auth from a file beside prometheus.yml (Prometheus resolves it relative to the
    config), so the token never sits in the config itself."""
    if s.metrics_token is None:
        return {}
    return {"authorization": {"type": "Bearer", "credentials_file": TOKEN_FILE}}


def _sd_job(s: MonitoringSettings, name: str, role: str, **extra: Any) -> dict[str, Any]:
    sd = {"url": s.gateway_url.rstrip("/") + SD_PATH, "refresh_interval": s.scrape_interval}
    return {
        "job_name": name,
        **extra,
        "http_sd_configs": [{**sd, **_auth(s)}],
        "relabel_configs": [{"source_labels": ["role"], "regex": role, "action": "keep"}],
    }


def prometheus_config(s: MonitoringSettings) -> dict[str, Any]:
    gw = urlsplit(s.gateway_url)
    gateway_address = gw.netloc
    scrape: list[dict[str, Any]] = [
        _sd_job(s, "deepfleet-engines", "engine"),
        # The gateway's series carry their own `model` and `replica` labels: keep them.
        _sd_job(s, "deepfleet-gateway", "gateway", honor_labels=True, **_auth(s)),
        {
            "job_name": "deepfleet-fleet",
            "honor_labels": True,
            "scheme": gw.scheme or "http",
            "metrics_path": FLEET_METRICS_PATH,
            **_auth(s),
            "static_configs": [{"targets": [gateway_address], "labels": {"role": "fleet"}}],
        },
    ]
    if s.dcgm_targets:
        scrape.append(
            {
                "job_name": "dcgm",
                "static_configs": [{"targets": list(s.dcgm_targets), "labels": {"role": "dcgm"}}],
            }
        )
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": s.scrape_interval,
            "evaluation_interval": s.evaluation_interval,
        },
        "rule_files": [RULES_FILE],
        "scrape_configs": scrape,
    }
    if s.alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(s.alertmanagers)}]}]
        }
    return config
