"""A 2-node spread inside a loopback-only network namespace (tests/fleet/ray/test_spread_netns.py
starts it there): the head pulls a 5-shard checkpoint from the loopback hub once; node 2
(127.0.0.2, its own cache dir) fetches its PP-2 stage from the head and nothing from the hub;
then `up` with the hf:// source spreads to the node of each replica before its engine starts.
Tests share the cluster and the hub and run in file order."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from deepfleet.catalog import bundled
from deepfleet.weights import cache
from deepfleet.weights.stages import files_for_stages
from tests.e2e.conftest import MODEL, running_fleet
from tests.fleet.ray.cluster.conftest import IN_NETNS, NOT_IN_NETNS, ROOT, Cluster, cli
from tests.weights.checkpoint import make_sharded
from tests.weights.hub import Hub, serve
from tests.weights.test_hub_pull import needs_hub

pytestmark = [pytest.mark.slow, needs_hub, pytest.mark.skipif(not IN_NETNS, reason=NOT_IN_NETNS)]


class Nodes(Cluster):
    def env(self, name: str) -> dict[str, str]:
        """Each node its own cache dir (on one machine they would share one otherwise)."""
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "DEEPFLEET_CACHE_DIR": str(self.root / f"cache-{name}"),
        }

    def start_node(self, name: str, ip: str, cores: str, port_base: int | None = None) -> None:
        sdir = self.root / name
        temp = str(self.root / f"t{name}")
        args = ["node", "start", "--state-dir", str(sdir), "--temp-dir", temp,
                "--num-cpus", "1", "--cores", cores, "--token-file", str(self.token),
                "--object-store-gib", "0.5", "--node-ip", ip]  # fmt: skip
        args += ["--head", "--no-dashboard"] if name == "head" else ["--join", "127.0.0.1:6379"]
        if port_base is not None:
            args += ["--port-base", str(port_base)]
        cli(*args, env=self.env(name))
        self.nodes[name] = sdir


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    root = Path(tempfile.mkdtemp(prefix="dfs", dir="/tmp"))
    c = Nodes(root, root / "token")
    try:
        c.start_node("head", "127.0.0.1", "0")
        c.start_node("w1", "127.0.0.2", "1", port_base=7000)
        yield c
    finally:
        c.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, dict[str, int]]]:
    model = bundled.default_target()
    if not bundled.is_intact(model):
        pytest.skip("the bundled model is not prepared: `deepfleet models prepare bundled`")
    ckpt = tmp_path_factory.mktemp("ckpt") / "sharded"
    sizes = make_sharded(model, ckpt)
    with serve(ckpt, tmp_path_factory.mktemp("hub"), repo="deepfleet/SmolLM2-sharded") as h:
        yield h, sizes


def _spread(nodes: Nodes, hub: Hub) -> dict[str, Any]:
    env = {**nodes.env("head"), **nodes.ray_env(), "HF_ENDPOINT": hub.endpoint}
    out = cli("models", "spread", f"hf://{hub.repo}", "--pp", "2", "--state-dir",
              str(nodes.head_dir), "--json", env=env, timeout=600)  # fmt: skip
    return dict(json.loads(out))


def _held(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}


def test_node_two_gets_its_stage_from_the_head_and_nothing_from_the_hub(
    nodes: Nodes, hub: tuple[Hub, dict[str, int]]
) -> None:
    h, sizes = hub
    data = _spread(nodes, h)
    head_folder = Path(data["folder"])
    assert cache.is_complete(head_folder)
    lfs = {n: s for n, s in sizes.items() if s >= 1 << 20}  # what the hub serves from LFS
    assert h.served("/_lfs/") == sum(lfs.values())  # every LFS byte once, to the head

    (transfer,) = data["transfers"]
    assert transfer["node"] == "127.0.0.2" and not transfer["already_complete"]
    w1 = Path(transfer["path"])
    assert w1.is_relative_to(nodes.root / "cache-w1")
    stage1 = files_for_stages(head_folder, list(sizes), 2, [1])
    held = _held(w1)
    assert set(held) == stage1 | {cache.MARKER}
    assert all(held[n] == sizes[n] for n in stage1)
    assert "model-00002-of-00005.safetensors" not in held  # layers 0-7: stage 0 only
    assert transfer["fetched_bytes"] == sum(sizes[n] for n in stage1)  # all from the head
    assert cache.is_complete(w1)
    print(
        "spread sizes:",
        json.dumps({"checkpoint": sum(sizes.values()), "needed per node": data["needed_bytes"],
                    "node 2 files": {n: sizes[n] for n in sorted(stage1)},
                    "hub LFS bytes served": h.served("/_lfs/"),
                    "head -> node 2 bytes": transfer["fetched_bytes"]}),
    )  # fmt: skip

    st = json.loads(cli("status", "--json", "--state-dir", str(nodes.head_dir)))
    progress = st["weights_spread"]["nodes"]["127.0.0.2"]
    assert progress["state"] == "complete" and progress["done"] == progress["total"]
    assert progress["from"] == "127.0.0.1" and progress["sent"] == transfer["fetched_bytes"]


def test_a_second_spread_moves_nothing(nodes: Nodes, hub: tuple[Hub, dict[str, int]]) -> None:
    h, _ = hub
    before = h.served("/_lfs/")
    data = _spread(nodes, h)
    (transfer,) = data["transfers"]
    assert transfer["already_complete"] and transfer["fetched_bytes"] == 0
    assert h.served("/_lfs/") == before


def test_up_spreads_to_the_node_of_each_replica_and_serves(
    nodes: Nodes, hub: tuple[Hub, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up` with an hf:// source in cluster mode: the head's pull is already complete (the hub
    serves nothing), and before the replica placed on node 2 starts, node 2 gets the files
    again from the head (its copy was removed). Starts two vLLM CPU engines."""
    h, sizes = hub
    w1_weights = nodes.root / "cache-w1" / "weights"
    shutil.rmtree(w1_weights, ignore_errors=True)
    before = h.served("/_lfs/")
    for key, value in {**nodes.env("head"), **nodes.ray_env(), "HF_ENDPOINT": h.endpoint}.items():
        monkeypatch.setenv(key, value)
    config = f"""
cluster: {{mode: ray, nodes: 2, devices_per_node: 1, device: CPU}}
models:
  - name: {MODEL}
    source: hf://{h.repo}
    engine: vllm-cpu
    replicas: 2
    max_model_len: 2048
    engine_args: {json.dumps(bundled.ENGINE_DEFAULTS)}
    engine_env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
"""
    with running_fleet(nodes.head_dir, config) as fleet:
        st = json.loads(cli("status", "--json", "--state-dir", str(nodes.head_dir)))
        assert sorted(r["nodes"][0] for r in st["replicas"]) == ["127.0.0.1", "127.0.0.2"]
        assert all(r["state"] == "ready" for r in st["replicas"])
        (w1,) = [m for m in cache.list_models(nodes.root / "cache-w1") if m.complete]
        assert {p.name for p in w1.path.iterdir() if p.is_file()} == set(sizes) | {cache.MARKER}
        progress = st["weights_spread"]["nodes"]["127.0.0.2"]
        assert progress["state"] == "complete" and progress["sent"] == sum(sizes.values())
        assert h.served("/_lfs/") == before  # the head's copy was complete: no hub bytes
        client = openai.OpenAI(base_url=fleet.url + "/v1", api_key="none", max_retries=0)
        answers = [
            client.chat.completions.create(
                model=MODEL, temperature=0, max_tokens=16,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
            ).choices[0].message.content or ""
            for _ in range(2)
        ]  # fmt: skip
        assert all("Paris" in a for a in answers), answers
