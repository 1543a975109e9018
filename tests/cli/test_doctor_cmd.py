"""`deepfleet doctor -f` on this machine: a missing model folder and a port in use, each on
one line with its fix, and exit code 1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepfleet", "doctor", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_missing_model_and_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        spec = tmp_path / "fleet.yaml"
        spec.write_text(
            f"models:\n  - {{name: m, source: {tmp_path / 'gone'}, engine: vllm-cpu}}\n"
            f"gateway: {{port: {port}}}\n"
        )
        text = doctor("-f", str(spec), "--state-dir", str(tmp_path))
        as_json = doctor("-f", str(spec), "--state-dir", str(tmp_path), "--json")
    assert text.returncode == 1, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    model = next(x for x in lines if " model " in x)
    assert model.startswith("ERROR") and f"model folder {tmp_path / 'gone'}" in model
    assert "-> fix: copy the model there" in model
    ports = next(x for x in lines if " ports " in x)
    assert ports.startswith("ERROR") and f"port {port} (gateway.port) is in use" in ports
    assert "-> fix: stop what holds it" in ports
    found = json.loads(as_json.stdout)
    assert {(f["check"], f["level"]) for f in found} >= {("model", "error"), ("ports", "error")}


def test_the_embedded_default_passes_here(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    spec = tmp_path / "fleet.yaml"
    spec.write_text(f"models:\n  - {{name: m, source: bundled}}\ngateway: {{port: {free}}}\n")
    r = doctor("-f", str(spec), "--state-dir", str(tmp_path))
    assert " driver   CPU only" in r.stdout and " ports    port" in r.stdout
    assert "error(s)" in r.stdout
