"""Real engines: `deepfleet up` with two vLLM CPU replicas of the bundled model and
`routing: kv_aware`. vLLM's own KV events reach the gateway's index, and a conversation's later
turns go to the replica that holds its earlier ones (vLLM's counters show the hits)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from deepfleet.fleet.ports import free_port
from tests.e2e.conftest import cli

pytestmark = pytest.mark.slow
MODEL = "smol"


def turn(history: list[dict[str, str]], question: str) -> dict[str, object]:
    return {"model": MODEL, "messages": [*history, {"role": "user", "content": question}],
            "max_tokens": 4, "temperature": 0}  # fmt: skip


def test_kv_aware_on_vllm_cpu(tmp_path: Path) -> None:
    port = free_port()
    config = {
        "models": [{"name": MODEL, "source": "bundled", "replicas": 2, "routing": "kv_aware",
                    "max_model_len": 4096}],
        "gateway": {"port": port},
        "state_dir": str(tmp_path / "state"),
    }  # fmt: skip
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(config))
    up = cli("up", "-f", str(tmp_path / "fleet.yaml"), "--detach", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        system = " ".join(f"rule {i}: answer briefly and politely." for i in range(120))
        history = [{"role": "system", "content": system}]
        with httpx.Client(timeout=120) as client:
            for question in ("Hello!", "What is 2 + 2?", "And 3 + 3?", "Thanks."):
                r = client.post(url + "/v1/chat/completions", json=turn(history, question))
                assert r.status_code == 200, r.text
                history += [{"role": "user", "content": question},
                            r.json()["choices"][0]["message"]]  # fmt: skip
                time.sleep(0.5)  # the engine publishes the prompt's blocks after its step
            text = client.get(url + "/metrics").text
        samples = {
            line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("deepfleet_")
        }
        index = samples["deepfleet_kv_index_blocks"]
        prefix = samples.get(
            f'deepfleet_routing_decisions_total{{model="{MODEL}",policy="kv_aware",reason="prefix"}}',
            0,
        )
        fleet_hits = samples[f'deepfleet_fleet_prefix_cache_hit_rate{{model="{MODEL}"}}']
        print(json.dumps({"index_blocks": index, "prefix_decisions": prefix, "hit": fleet_hits}))
        assert index >= 8  # 1,000+ tokens of 128-token blocks, from vLLM's BlockStored events
        assert prefix == 3  # every later turn went to the replica holding the conversation
        assert fleet_hits > 0.5
    finally:
        cli("down", "--state-dir", str(tmp_path / "state"), timeout=180)
