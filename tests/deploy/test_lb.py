"""`deepfleet render lb` and the config `up` runs for `gateway.instances`: valid for HAProxy
itself (`haproxy -c`), with the settings docs/lb.md promises, and clear errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepfleet.cli.main import app
from deepfleet.config import FleetConfig
from deepfleet.fleet.front import front_services
from deepfleet.fleet.gateways import HAPROXY_CONFIG, LoadBalancerError

ROOT = Path(__file__).parents[2]
HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy not installed (scripts/setup-test-deps.sh)"
)


def haproxy_check(path: Path) -> None:
    assert HAPROXY is not None
    r = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def render(*args: str) -> str:
    result = CliRunner().invoke(app, ["render", "lb", *args])
    assert result.exit_code == 0, result.output
    return result.output


@needs_haproxy
def test_render_lb_for_the_ray_head_and_named_gateways(tmp_path: Path) -> None:
    example = ROOT / "examples/fleet.r1-8x8.yaml"
    text = render("-f", str(example))  # the gateway on the Ray head (cluster.head: 10.0.0.1)
    assert "server gateway-0 10.0.0.1:8000 check" in text and "bind 0.0.0.0:8080" in text
    out = tmp_path / "haproxy.cfg"
    render("-f", str(example), "-o", str(out), "--gateway", "10.0.0.1:8000",
           "--gateway", "10.0.0.2:8000", "--bind", "0.0.0.0:80")  # fmt: skip
    text = out.read_text()
    for setting in (
        "balance leastconn",
        "option httpchk",
        "uri /health",
        "http-check expect status 200",
        "option redispatch",
        "option http-server-close",
        "option http-no-delay",
        "timeout tunnel 660s",  # read_timeout_s 600 + 60: the gateway ends a silent stream first
        "timeout server 660s",
        "server gateway-1 10.0.0.2:8000 check",
    ):
        assert setting in text, setting
    haproxy_check(out)


@needs_haproxy
def test_up_writes_a_valid_config_for_instances(tmp_path: Path) -> None:
    cfg = FleetConfig.model_validate(
        {"models": [{"name": "m"}], "gateway": {"port": 9000, "instances": 3}}
    )
    services = front_services(cfg, tmp_path)
    ids = [s.status.replica_id for s in services]
    assert ids == ["kv-relay", "gateway-1", "gateway-2", "lb"]
    assert "--port" in services[1].spec.argv and "9002" in services[1].spec.argv
    assert services[0].before_replicas  # sees the engines' KV events from the first
    text = (tmp_path / HAPROXY_CONFIG).read_text()
    assert "bind 127.0.0.1:9000" in text
    assert all(f"127.0.0.1:{p} check" in text for p in (9001, 9002, 9003))
    haproxy_check(tmp_path / HAPROXY_CONFIG)


def test_lb_refuses_bad_addresses_and_workers_with_instances(tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text("models: [{name: m}]\ngateway: {instances: 2}\n")
    bad = CliRunner().invoke(app, ["render", "lb", "-f", str(cfg), "--gateway", "nohost"])
    assert bad.exit_code == 2 and "--gateway 'nohost': expected HOST:PORT" in bad.output
    clash = CliRunner().invoke(app, ["render", "lb", "-f", str(cfg), "--bind", "127.0.0.1:8001"])
    assert clash.exit_code == 2 and "is a gateway's own address" in clash.output
    with pytest.raises(ValueError, match=r"gateway\.instances > 1 needs gateway\.workers: 1"):
        FleetConfig.model_validate(
            {"models": [{"name": "m"}], "gateway": {"instances": 2, "workers": 2}}
        )


def test_no_haproxy_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = FleetConfig.model_validate({"models": [{"name": "m"}], "gateway": {"instances": 2}})
    with pytest.raises(LoadBalancerError, match="apt-get install -y haproxy"):
        front_services(cfg, tmp_path)
