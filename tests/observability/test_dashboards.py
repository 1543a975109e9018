"""The rendered Grafana files: well-formed dashboards whose every query Prometheus parses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from deepfleet.observability.dashboards import DASHBOARDS
from deepfleet.observability.grafana import DATASOURCE_UID
from tests.observability.promql import dashboard_queries, substitute


def _dashboards(rendered: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((rendered / "grafana/dashboards").glob("*"))]


def test_one_file_per_dashboard_with_unique_uids(rendered: Path) -> None:
    found = _dashboards(rendered)
    assert sorted(d["uid"] for d in found) == sorted(d.uid for d in DASHBOARDS)


def test_panels_fit_the_grid_without_overlap(rendered: Path) -> None:
    for d in _dashboards(rendered):
        panels = d["panels"]
        assert len({p["id"] for p in panels}) == len(panels)
        cells: set[tuple[int, int]] = set()
        for p in panels:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, (d["title"], p["title"])
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}  # fmt: skip
            assert not cells & mine, (d["title"], p["title"])
            cells |= mine


def test_queries_use_the_provisioned_datasource_and_defined_variables(rendered: Path) -> None:
    for d in _dashboards(rendered):
        defined = {v["name"] for v in d["templating"]["list"]}
        for p in d["panels"]:
            assert p["datasource"]["uid"] == DATASOURCE_UID
            for t in p["targets"]:
                assert t["datasource"]["uid"] == DATASOURCE_UID
                used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
                assert used <= defined, (d["title"], p["title"], used - defined)
    ds = yaml.safe_load((rendered / "grafana/provisioning/datasources/deepfleet.yml").read_text())
    assert ds["datasources"][0]["uid"] == DATASOURCE_UID
    prov = yaml.safe_load((rendered / "grafana/provisioning/dashboards/deepfleet.yml").read_text())
    assert Path(prov["providers"][0]["options"]["path"]) == rendered / "grafana/dashboards"


def test_the_slo_is_drawn_on_every_latency_panel(rendered: Path) -> None:
    latency = json.loads((rendered / "grafana/dashboards/deepfleet-latency.json").read_text())
    gateway_panels = latency["panels"][:3]
    for p in gateway_panels:
        assert any("deepfleet:slo_" in t["expr"] for t in p["targets"]), p["title"]
        assert p["fieldConfig"]["overrides"], p["title"]


def test_prometheus_parses_every_query(rendered: Path, promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries(rendered / "grafana/dashboards")
    assert len(queries) > 40
    rules = {"groups": [{"name": "panels", "rules": [
        {"record": f"panel:q{i}", "expr": substitute(q.expr)} for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
