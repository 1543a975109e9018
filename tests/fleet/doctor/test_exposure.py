"""The doctor's exposure checks against real sockets, processes and files."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from deepfleet.fleet.doctor.exposure import exposed_sockets, loose_files, open_dashboard
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.process import pid_start_time
from deepfleet.fleet.state import STATE_FILE, FleetState, ReplicaState, ReplicaStatus, write_state

LISTEN = (
    "import socket, sys, time\n"
    "for host, port in [('0.0.0.0', int(sys.argv[1])), ('127.0.0.1', int(sys.argv[2]))]:\n"
    "    s = socket.socket(); s.bind((host, port)); s.listen(); globals()[f'k{port}'] = s\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def listeners() -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    public, local = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-c", LISTEN, str(public), str(local)])
    time.sleep(0.5)
    yield proc, public, local
    proc.kill()
    proc.wait()


def _state(tmp_path: Path, pid: int, start: int | None) -> None:
    replica = ReplicaStatus(
        "m-0", "m", "vllm", "http://x", ReplicaState.READY, pid=pid, pid_start=start
    )
    write_state(tmp_path / STATE_FILE, FleetState(1, "http://gw", replicas=[replica]))


def test_a_fleet_process_on_a_public_address_is_reported(
    tmp_path: Path, listeners: tuple[subprocess.Popen[bytes], int, int]
) -> None:
    proc, public, local = listeners
    _state(tmp_path, proc.pid, pid_start_time(proc.pid))
    found = exposed_sockets(tmp_path, "127.0.0.1", 8000)
    assert [f.level for f in found] == ["warn"]
    assert f"0.0.0.0:{public}" in found[0].message and found[0].fix
    assert str(local) not in found[0].message
    # The gateway's own host and port are what the config publishes on purpose.
    assert [f.level for f in exposed_sockets(tmp_path, "0.0.0.0", public)] == ["ok"]


def test_a_process_that_is_not_the_fleets_is_not_judged(
    tmp_path: Path, listeners: tuple[subprocess.Popen[bytes], int, int]
) -> None:
    proc, _, _ = listeners
    _state(tmp_path, proc.pid, 1)  # a stale fleet.json: the pid is someone else's now
    assert [f.level for f in exposed_sockets(tmp_path, "127.0.0.1", 8000)] == ["ok"]


def test_state_dir_files_others_may_read(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    secret = tmp_path / "keys.db"
    secret.write_text("x")
    secret.chmod(0o644)
    found = loose_files(tmp_path)
    assert found[0].level == "warn" and "keys.db (644)" in found[0].message
    assert found[0].fix == f"chmod -R go-rwx {tmp_path}"
    secret.chmod(0o600)
    assert loose_files(tmp_path)[0].level == "ok"


def test_a_unix_socket_in_the_private_state_dir_is_not_loose(tmp_path: Path) -> None:
    """An engine binds its KV events socket with its own umask (0755 here); the 0700 dir is
    what keeps others out, so the socket's mode is not a finding."""
    tmp_path.chmod(0o700)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "kv-5557.ipc"))
    try:
        (tmp_path / "kv-5557.ipc").chmod(0o755)
        assert loose_files(tmp_path)[0].level == "ok"
    finally:
        sock.close()


@pytest.mark.parametrize(("status", "level"), [(200, "error"), (401, "ok")])
def test_a_ray_dashboard_without_a_token(status: int, level: str) -> None:
    class Dashboard(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Dashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        found = open_dashboard(f"http://127.0.0.1:{server.server_port}")
        assert [f.level for f in found] == [level]
    finally:
        server.shutdown()
    assert open_dashboard(f"http://127.0.0.1:{free_port()}") == []  # no dashboard: nothing
