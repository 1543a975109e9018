"""End to end: a fleet.yaml naming `hf://...` on the loopback hub; `up` pulls it (with the bar)
and the engine serves the pulled folder. Starts a real vLLM engine: slow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from deepfleet.catalog import bundled
from deepfleet.fleet.ports import free_port
from deepfleet.weights import cache
from tests.weights.hub import serve
from tests.weights.test_hub_pull import needs_hub

pytestmark = [pytest.mark.slow, needs_hub]
MODEL = "SmolLM2-135M-Instruct"


def test_up_pulls_and_serves_paris(tmp_path: Path) -> None:
    model = bundled.default_target()
    if not bundled.is_intact(model):
        pytest.skip("the bundled model is not prepared: `deepfleet models prepare bundled`")
    with serve(model, tmp_path / "hub") as hub:
        fleet = tmp_path / "fleet.yaml"
        spec = {
            "name": MODEL,
            "source": f"hf://{hub.repo}",
            "engine": "vllm-cpu",
            "engine_args": dict(bundled.ENGINE_DEFAULTS),
        }
        fleet.write_text(yaml.safe_dump({"models": [spec]}))
        port, state = free_port(), tmp_path / "state"
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "DEEPFLEET_CACHE_DIR": str(tmp_path / "cache"),
            "HF_HUB_OFFLINE": "0",  # `up` pulls from the local hub, whatever the caller set
        }
        base = [sys.executable, "-m", "deepfleet"]
        up = subprocess.run(
            [*base, "up", "-f", str(fleet), "--detach", "--port", str(port),
             "--state-dir", str(state)],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            assert "MB" in up.stderr  # the pull's bar
            [pulled] = cache.list_models(tmp_path / "cache")
            assert pulled.complete
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                timeout=120,
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                    "temperature": 0,
                    "max_tokens": 16,
                },
            )
            assert r.status_code == 200, r.text
            assert "Paris" in r.json()["choices"][0]["message"]["content"]
        finally:
            subprocess.run(
                [*base, "down", "--state-dir", str(state)], env=env, timeout=120, check=False
            )
