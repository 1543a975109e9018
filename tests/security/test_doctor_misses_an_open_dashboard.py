"""The doctor's check for an open Ray dashboard (issue 19's "doctor reports open dashboards")
looked only at 127.0.0.1:8265. A dashboard started by hand with `--dashboard-host=0.0.0.0`
answers on the node's own address, where every machine of the network reaches it and runs
code through its job API; one on another port, or on the head when the doctor runs on a
worker, was never probed. Now it probes `cluster.dashboard_port` on loopback, on each of
the node's other addresses and on `cluster.head`, through `deepfleet doctor`'s own code."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psutil
import pytest

from deepfleet.cli.doctor_cmd import run_doctor
from deepfleet.config import FleetConfig
from deepfleet.fleet.ports import free_port


class _JobApi(BaseHTTPRequestHandler):
    """Ray's job API without authentication: lists jobs to anyone."""

    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path.startswith("/api/jobs/") else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def dashboard(host: str, port: int, status: int = 200) -> Iterator[str]:
    handler = type("Dashboard", (_JobApi,), {"status": status})
    server = HTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


def _ray_findings(cluster: dict[str, object], state_dir: Path) -> list[tuple[str, str]]:
    cfg = FleetConfig.model_validate({"models": [{"name": "m"}], "cluster": cluster})
    return [(f.level, f.message) for f in run_doctor(cfg, state_dir) if f.check == "ray"]


def _public_ipv4() -> str:
    found = [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    if not found:
        pytest.skip("this machine has no non-loopback IPv4 address")
    return found[0]


def test_an_open_dashboard_on_the_nodes_address_is_reported(tmp_path: Path) -> None:
    port = free_port()
    with dashboard(_public_ipv4(), port) as url:
        found = _ray_findings({"dashboard_port": port}, tmp_path)
    assert [level for level, _ in found] == ["error"], found
    assert url in found[0][1] and "without a token" in found[0][1]


def test_an_open_dashboard_on_the_configured_head_is_reported(tmp_path: Path) -> None:
    port = free_port()
    with dashboard("127.0.0.2", port) as url:  # not this node's address: only the head's
        found = _ray_findings({"head": "127.0.0.2:6379", "dashboard_port": port}, tmp_path)
    assert [level for level, _ in found] == ["error"], found
    assert url in found[0][1]


def test_a_dashboard_that_wants_its_token_is_ok(tmp_path: Path) -> None:
    port = free_port()
    with dashboard(_public_ipv4(), port, status=401) as url:
        found = _ray_findings({"dashboard_port": port}, tmp_path)
    assert [level for level, _ in found] == ["ok"] and url in found[0][1]
