"""KV-aware routing over Ray-placed replicas (docs/kv-routing.md, "Cluster mode"): each
engine publishes its KV events on its own node's IP, at a port it bound itself, which its
supervisor actor reports into fleet.json; the head's relay subscribes there, so the gateway's
index learns the blocks of the replica on the second node and a repeated long prompt goes to
the replica holding it. `pending_ttl_s: 0`: the router's memory of where it sent prompts plays
no part, only the engines' events. Runs after test_cluster.py on the same cluster (any node
but the head serves as the second one)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import STATE_FILE, ReplicaStatus, read_state
from tests.e2e.conftest import MODEL, Fleet, running_fleet
from tests.fleet.ray.cluster.conftest import IN_NETNS, NOT_IN_NETNS, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not IN_NETNS, reason=NOT_IN_NETNS)]

HEAD = "127.0.0.1"
CONFIG = f"""
cluster: {{mode: ray, nodes: 2, devices_per_node: 1, device: CPU}}
models:
  - name: {MODEL}
    source: bundled
    engine: vllm-cpu
    replicas: 2
    max_model_len: 2048
    routing: kv_aware
    engine_env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
kv_cache: {{routing: {{pending_ttl_s: 0, relay_tcp: "127.0.0.1:{{relay}}"}}}}
"""


@pytest.fixture(scope="module")
def fleet(cluster: Cluster) -> Iterator[Fleet]:
    with running_fleet(cluster.head_dir, CONFIG.replace("{relay}", str(free_port()))) as f:
        yield f


def evented(fleet: Fleet, timeout: float = 60) -> list[ReplicaStatus]:
    """The replicas once each has its KV events endpoint in fleet.json."""
    deadline = time.monotonic() + timeout
    while True:
        st = read_state(fleet.state_dir / STATE_FILE)
        reps = st.replicas if st else []
        if len(reps) == 2 and all(r.kv_events_endpoint for r in reps):
            return reps
        assert time.monotonic() < deadline, [(r.replica_id, r.kv_events_endpoint) for r in reps]
        time.sleep(0.5)


def samples(url: str, prefix: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def total(url: str, name: str) -> float:
    return sum(v for k, v in samples(url, name).items() if k.split("{")[0] == name)


def index_blocks(fleet: Fleet) -> float:
    return samples(fleet.url, "deepfleet_kv_index_blocks").get("deepfleet_kv_index_blocks", 0)


def prefix_decisions(fleet: Fleet) -> float:
    key = f'deepfleet_routing_decisions_total{{model="{MODEL}",policy="kv_aware",reason="prefix"}}'
    return samples(fleet.url, "deepfleet_routing_decisions_total").get(key, 0)


def document(i: int) -> str:
    """~900 tokens (7 of vllm-cpu's 128-token blocks), distinct per i from its first block."""
    return f"Document {i}. " + " ".join(
        f"Fact {i}.{j}: the number {j * 7 + i} comes after {j * 7 + i - 1}." for j in range(60)
    )


def ask(fleet: Fleet, text: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 2,
            "temperature": 0}  # fmt: skip
    r = httpx.post(fleet.url + "/v1/chat/completions", json=body, timeout=180)
    assert r.status_code == 200, r.text


def served(engines: dict[str, str]) -> dict[str, float]:
    return {rid: total(url, "vllm:request_success_total") for rid, url in engines.items()}


def grows(read: Any, above: float, timeout: float = 15) -> float:
    """read() once it exceeds `above` (events arrive after the engine's step), else its last."""
    deadline = time.monotonic() + timeout
    value = read()
    while value <= above and time.monotonic() < deadline:
        time.sleep(0.3)
        value = read()
    return float(value)


def test_the_gateway_learns_a_second_nodes_blocks_and_routes_a_repeat_there(
    fleet: Fleet,
) -> None:
    reps = evented(fleet)
    remote = next(r for r in reps if r.node != HEAD)
    for r in reps:  # bound by the engine on its node's IP, at a port of its choosing
        assert r.kv_events_bound and r.kv_events_endpoint == f"tcp://{r.node}:{r.kv_events_port}"
    engines = {r.replica_id: r.url for r in reps}
    time.sleep(2)  # the head's relay follows fleet.json every second
    # kv_aware spreads new prompts over the replicas: send new ones until one lands on the
    # second node, and see the gateway's index grow by its blocks.
    learned, landed = 0.0, ""
    for i in range(4):
        before, blocks = served(engines), index_blocks(fleet)
        ask(fleet, document(i))
        after = served(engines)
        (where,) = [rid for rid in engines if after[rid] > before[rid]]
        now = grows(lambda: index_blocks(fleet), blocks + 3)
        if where == remote.replica_id:
            learned, landed = now - blocks, document(i)
            break
    assert landed, "no new prompt went to the second node's replica"
    assert learned >= 5, f"the gateway's index learned {learned} blocks from {remote.node}"
    hits_before = total(remote.url, "vllm:prefix_cache_hits_total")
    decided = prefix_decisions(fleet)
    for _ in range(2):
        before = served(engines)
        ask(fleet, landed)
        after = served(engines)
        assert [rid for rid in engines if after[rid] > before[rid]] == [remote.replica_id]
    hits = total(remote.url, "vllm:prefix_cache_hits_total") - hits_before
    report = {
        "remote": remote.node,
        "endpoint": remote.kv_events_endpoint,
        "index_blocks_learned": learned,
        "prefix_decisions": prefix_decisions(fleet) - decided,
        "remote_prefix_hit_tokens": hits,
        "load_avg_1m": os.getloadavg()[0],
    }
    print("ray-kv-events:", json.dumps(report))
    assert report["prefix_decisions"] == 2 and hits >= 2 * 5 * 128, report
