"""`deepfleet top` in a pseudo-terminal: it draws live frames from real HTTP /metrics and
quits cleanly on Ctrl-C typed into the terminal, also when it was started with SIGINT ignored
(as a shell starts a background job: a local `.ci/run` started so failed here)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from deepfleet.cli import top_cmd
from deepfleet.cli.main import app
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state


class Metrics(BaseHTTPRequestHandler):
    """An engine whose counters grow on every scrape: 100 tokens out, 100 prefix tokens looked
    up and 50 found each time, so the hit rate is exactly 50%."""

    scrapes = 0

    def do_GET(self) -> None:
        Metrics.scrapes += 1
        n = Metrics.scrapes
        body = (
            "# TYPE vllm:num_requests_running gauge\n"
            'vllm:num_requests_running{engine="0"} 3\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            'vllm:kv_cache_usage_perc{engine="0"} 0.42\n'
            "# TYPE vllm:generation_tokens_total counter\n"
            f'vllm:generation_tokens_total{{engine="0"}} {100 * n}\n'
            "# TYPE vllm:prefix_cache_queries_total counter\n"
            f'vllm:prefix_cache_queries_total{{engine="0"}} {100 * n}\n'
            "# TYPE vllm:prefix_cache_hits_total counter\n"
            f'vllm:prefix_cache_hits_total{{engine="0"}} {50 * n}\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    state = FleetState(
        controller_pid=os.getpid(), gateway_url="http://127.0.0.1:9",  # nothing listens
        models=[ModelRoute("tiny", "round_robin")],
        replicas=[ReplicaStatus("tiny-0", "tiny", "vllm", url, ReplicaState.READY, restarts=2)],
    )  # fmt: skip
    write_state(tmp_path / "fleet.json", state)
    try:
        yield tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def read_until(fd: int, done: Callable[[str], bool], timeout: float) -> str:
    """Everything the terminal showed until done(text) holds."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
        if done(seen.decode(errors="replace")):
            return seen.decode(errors="replace")
    raise AssertionError(f"not seen in time:\n{seen.decode(errors='replace')}")


def drain_until_exit(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"still running {timeout:.0f} s after Ctrl-C")
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other end closed
                proc.wait(max(0.1, deadline - time.monotonic()))


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited through setsid's exec


def _rated_frame(text: str) -> bool:
    """A frame with rates (counters grew between two scrapes) drawn to its last row."""
    _, _, after = text.partition("rates over")
    return all(n in after for n in ("tiny-0", "50%", "42%"))


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_top_draws_live_frames_and_quits_on_ctrl_c(state_dir: Path, sigint: str) -> None:
    setsid = shutil.which("setsid")
    if setsid is None:
        pytest.skip("setsid (util-linux) is needed to give top a controlling terminal")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        # setsid -c: a new session whose controlling terminal is this pty, so the Ctrl-C typed
        # below reaches top as SIGINT, as it would from a person at a terminal.
        [setsid, "-w", "-c", sys.executable, "-m", "deepfleet", "top", "--state-dir",
         str(state_dir), "--interval", "0.3", "--window", "5"],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
        preexec_fn=_ignore_sigint if sigint == "ignored" else None,
    )  # fmt: skip
    os.close(slave)
    try:
        text = read_until(master, _rated_frame, 60)
        assert text.count("deepfleet top") >= 2  # the first frame, then redrawn in place
        assert "\x1b[" in text  # drawn with terminal escapes (colors, cursor moves)
        assert "DOWN" in text  # nothing listens at the gateway's address
        os.write(master, b"\x03")
        # Keep reading while it quits: a terminal nobody reads fills up (a few KiB), and a
        # frame written into it then blocks top before it can handle the Ctrl-C.
        drain_until_exit(master, proc, 15)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


def test_top_without_a_fleet(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["top", "--state-dir", str(tmp_path), "--once"])
    assert result.exit_code == 3
    assert "no fleet is running" in result.output


def test_top_once_prints_one_frame(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(top_cmd, "out", Console(width=200, highlight=False))
    result = CliRunner().invoke(
        app, ["top", "--state-dir", str(state_dir), "--once", "--interval", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert "tiny-0" in result.output and "50%" in result.output
