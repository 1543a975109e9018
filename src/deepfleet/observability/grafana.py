"""Grafana files: dashboard JSON from `panels.Dashboard`, and the provisioning files that load
them and the Prometheus datasource when Grafana starts."""

from __future__ import annotations

from typing import Any

from deepfleet.observability.panels import Dashboard, Panel
from deepfleet.observability.settings import MonitoringSettings

DATASOURCE_UID = "deepfleet-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
WIDTH = {"timeseries": 12, "stat": 6}
HEIGHT = {"timeseries": 8, "stat": 5}
# The series a variable's values come from; "All" matches every value (`.*`).
VARIABLES = {
    "model": 'label_values(up{role="engine"}, model)',
    "replica": 'label_values(up{role="engine", model=~"$model"}, replica)',
}


def _thresholds(panel: Panel) -> dict[str, Any]:
    if panel.healthy_from is not None:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": panel.healthy_from}]
    elif panel.threshold is not None:
        steps = [{"color": "green", "value": None}, {"color": "red", "value": panel.threshold}]
    else:
        steps = [{"color": "green", "value": None}]
    return {"mode": "absolute", "steps": steps}


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel)}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": True,
            "thresholdsStyle": {"mode": "line" if panel.threshold is not None else "off"},
        }
    else:
        defaults["color"] = {"mode": "thresholds"}
    overrides: list[dict[str, Any]] = []
    if any(q.slo for q in panel.queries):
        overrides.append(
            {
                "matcher": {"id": "byRegexp", "options": ".*SLO$"},
                "properties": [
                    {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                    {"id": "custom.fillOpacity", "value": 0},
                ],
            }
        )
    return {"defaults": defaults, "overrides": overrides}


def _options(panel: Panel) -> dict[str, Any]:
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
        }
    return {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": HEIGHT[panel.kind], "w": WIDTH[panel.kind], "x": x, "y": y},
        "fieldConfig": _field_config(panel),
        "options": _options(panel),
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend or "__auto",
                "range": True,
            }
            for i, q in enumerate(panel.queries)
        ],
    }


def _variable(name: str) -> dict[str, Any]:
    query = VARIABLES[name]
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard_json(d: Dashboard) -> dict[str, Any]:
    """A Grafana dashboard: panels left to right, wrapping at Grafana's 24 columns."""
    panels: list[dict[str, Any]] = []
    x = y = row_height = 0
    for i, p in enumerate(d.panels, start=1):
        w = WIDTH[p.kind]
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel(p, i, x, y))
        x += w
        row_height = max(row_height, HEIGHT[p.kind])
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": ["deepfleet"],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [_variable(v) for v in d.variables]},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["deepfleet"], "asDropdown": True, "title": "deepfleet"}
        ],
        "panels": panels,
    }


def datasource_provisioning(s: MonitoringSettings) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "deepfleet Prometheus",
                "type": "prometheus",
                "uid": DATASOURCE_UID,
                "access": "proxy",
                "url": s.prometheus_url,
                "isDefault": True,
                "jsonData": {"timeInterval": s.scrape_interval},
            }
        ],
    }


def dashboard_provisioning(path: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "deepfleet",
                "folder": "deepfleet",
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": True,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }
