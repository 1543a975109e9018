"""Finding 2 (High): compose published Grafana (admin/admin), Prometheus (no login) and
Open-WebUI (whoever signs up first becomes admin) on every interface.

They must be published on loopback unless the config asks otherwise (deploy.monitoring.host,
ui.host), with Grafana's and Open-WebUI's admin passwords generated per render into a 0600
.env that compose reads, and Open-WebUI's signup closed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CASES, compose_command, render, run
from tests.security.bundles import HEX, write

UIS = ("prometheus", "grafana", "open-webui")


def _resolved(folder: Path) -> dict[str, Any]:
    """compose.yaml as compose itself reads it from the bundle's folder (.env applied)."""
    done = run([*compose_command(), "--project-directory", str(folder),
                "-f", str(folder / "compose.yaml"), "config", "--format", "json"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def _env_file(folder: Path) -> dict[str, str]:
    lines = (folder / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.mark.parametrize("name", ["h200-1x8-compose", "r1-8x8-compose"])
def test_stranger_on_the_network_cannot_log_into_grafana_prometheus_or_open_webui(
    name: str, tmp_path: Path
) -> None:
    data = CASES[name].data()
    first, second = tmp_path / "a", tmp_path / "b"
    modes = write(render("compose", data), first)
    write(render("compose", data), second)
    services = yaml.safe_load((first / "compose.yaml").read_text())["services"]
    for ui in UIS:
        for port in services[ui]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{ui} published on {port}"
    assert modes[".env"] == 0o600
    env, other = _env_file(first), _env_file(second)
    resolved = _resolved(first)["services"]
    grafana = resolved["grafana"]["environment"]
    password = grafana["GF_SECURITY_ADMIN_PASSWORD"]
    assert HEX.match(password) and password == env["GRAFANA_ADMIN_PASSWORD"]
    assert password != other["GRAFANA_ADMIN_PASSWORD"], "the same password in every render"
    webui = resolved["open-webui"]["environment"]
    assert webui["ENABLE_SIGNUP"] == "false"
    assert webui["WEBUI_ADMIN_EMAIL"] == env["WEBUI_ADMIN_EMAIL"]
    assert HEX.match(webui["WEBUI_ADMIN_PASSWORD"])
    assert webui["WEBUI_ADMIN_PASSWORD"] != other["WEBUI_ADMIN_PASSWORD"]
    # the compose file itself holds no password, only the variables
    text = (first / "compose.yaml").read_text()
    assert password not in text and webui["WEBUI_ADMIN_PASSWORD"] not in text
    # what the config asks for is honoured
    data["deploy"].setdefault("monitoring", {})["host"] = "10.0.0.1"
    data.setdefault("ui", {})["host"] = "10.0.0.1"
    asked = yaml.safe_load(render("compose", data).files["compose.yaml"])["services"]
    for ui in UIS:
        assert all(str(p).startswith("10.0.0.1:") for p in asked[ui]["ports"]), ui
