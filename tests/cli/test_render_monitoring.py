"""`deepfleet render monitoring` as a command: files from a fleet.yaml, checked by promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from deepfleet.cli.main import app as main_app
from deepfleet.cli.monitoring_cmd import register_render

FLEET_YAML = """
models:
  - name: small
  - name: other
    replicas: 2
gateway: {port: 8123, metrics_token: abc}
"""


def render_app() -> typer.Typer:
    """The `render` sub-app as render_cmd builds it, holding only our subcommand."""
    app = typer.Typer()
    render = typer.Typer()
    register_render(render)
    app.add_typer(render, name="render")
    return app


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(render_app(), ["render", "monitoring", *args])
    return result.exit_code, result.output


def test_renders_a_fleet_yaml(tmp_path: Path, promtool: str) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET_YAML)
    out = tmp_path / "mon"
    code, output = invoke("-f", str(tmp_path / "fleet.yaml"), "-o", str(out),
                          "--ttft-slo", "1.5", "--scrape-interval", "5s",
                          "--dcgm", "10.0.0.7:9400")  # fmt: skip
    assert code == 0, output
    assert "prometheus --config.file=" in output
    config = yaml.safe_load((out / "prometheus.yml").read_text())
    sd = config["scrape_configs"][0]["http_sd_configs"][0]
    assert sd["url"] == "http://127.0.0.1:8123/sd/targets"
    assert sd["authorization"]["credentials_file"] == "metrics_token"
    assert (out / "metrics_token").read_text() == "abc"
    assert (out / "metrics_token").stat().st_mode & 0o077 == 0
    assert config["scrape_configs"][-1]["static_configs"][0]["targets"] == ["10.0.0.7:9400"]
    rules = yaml.safe_load((out / "rules/deepfleet.rules.yml").read_text())
    slos = {(r["labels"]["model"], r["expr"]) for r in rules["groups"][0]["rules"]
            if r.get("record") == "deepfleet:slo_ttft_seconds"}  # fmt: skip
    assert slos == {("small", "vector(1.5)"), ("other", "vector(1.5)")}
    for args in (["check", "config", str(out / "prometheus.yml")],
                 ["check", "rules", str(out / "rules/deepfleet.rules.yml")]):  # fmt: skip
        r = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_default_fleet_and_gateway_override(tmp_path: Path) -> None:
    code, output = invoke("-o", str(tmp_path), "--gateway-url", "http://head:8000")
    assert code == 0, output
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert config["scrape_configs"][2]["static_configs"][0]["targets"] == ["head:8000"]
    assert not (tmp_path / "metrics_token").exists()


GPU_FLEET = """
cluster: {mode: ray, head: 10.0.0.1, nodes: 2, devices_per_node: 8, device: A100-40GB}
models:
  - name: r1
    source: /models/r1
    engine: vllm
deploy:
  nodes:
    - {name: n1, address: 10.0.0.1}
    - {name: n2, address: 10.0.0.2}
  monitoring: {scrape_interval_s: 30, prometheus_port: 9191}
"""


def test_gpu_fleet_defaults_from_the_deploy_section(tmp_path: Path) -> None:
    """Through the real `deepfleet render` group: DCGM on every node, deploy.monitoring's
    scrape interval, and Grafana's datasource at its Prometheus port."""
    (tmp_path / "fleet.yaml").write_text(GPU_FLEET)
    args = ["render", "monitoring", "-f", str(tmp_path / "fleet.yaml"), "-o", str(tmp_path / "m")]
    result = CliRunner().invoke(main_app, args)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "m/prometheus.yml").read_text())
    assert config["global"] == {"scrape_interval": "30s", "evaluation_interval": "30s"}
    dcgm = config["scrape_configs"][-1]
    assert dcgm["job_name"] == "dcgm"
    assert dcgm["static_configs"][0]["targets"] == ["10.0.0.1:9400", "10.0.0.2:9400"]
    ds = yaml.safe_load((tmp_path / "m/grafana/provisioning/datasources/deepfleet.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://127.0.0.1:9191"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine-down-for", "1 minute"], "not a Prometheus duration"),
        (["--scrape-interval", ""], "not a Prometheus duration"),
        (["--ttft-slo", "0"], "SLOs must be positive"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = invoke("-o", str(tmp_path), *args)
    assert code == 1 and message in output
