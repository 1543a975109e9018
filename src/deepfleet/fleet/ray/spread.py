"""Spread a verified model folder over a Ray cluster: each node fetches over the LAN what its
replicas need, from the head (or its rack's seed), never from the hub.

Per wave (weights/spread_plan.py) a seed actor pinned to each seed node serves that node's copy
(weights/seed.py, bound to the node's cluster address, a fresh token per spread), and one task
pinned to each fetching node runs weights/fetch.py into the node's own cache. The coordinator,
in the process that called `spread`, polls the seeds for the nodes' progress reports and hands
them to `on_progress` (the CLI writes them to the state dir for `deepfleet status`).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from deepfleet import paths
from deepfleet.fleet.state import NodeStatus
from deepfleet.weights import cache
from deepfleet.weights.fetch import FetchResult, fetch_from_seed
from deepfleet.weights.seed import SeedServer
from deepfleet.weights.spread_plan import Transfer, folder_key, local_folder, waves, write_progress
from deepfleet.weights.stages import files_for_stages

Progress = Callable[[dict[str, dict[str, Any]]], None]
"""Called with {node address: {"done", "total", "state", "from"}} about once a second."""
POLL_S = 1.0


class SpreadError(RuntimeError):
    """A node could not get its files; the message names the node and why."""


class SeedHost:
    """Body of the seed actor: serves this node's copy of the folder while a wave runs."""

    def __init__(self, address: str, key: str, token: str) -> None:
        folder = local_folder(key, paths.cache_dir())
        self.server = SeedServer(folder, token, address).start()

    def url(self) -> str:
        return self.server.url

    def stats(self) -> dict[str, Any]:
        return self.server.stats.snapshot()

    def stop(self) -> None:
        self.server.stop()


def _fetch(url: str, token: str, node: str, key: str, names: list[str]) -> dict[str, Any]:
    """Body of the fetch task, on the fetching node: into its own cache dir."""
    result: FetchResult = fetch_from_seed(
        url, token, node, local_folder(key, paths.cache_dir()), names
    )
    return asdict(result)


def _pinned(node_id: str) -> dict[str, Any]:
    return {
        "num_cpus": 0,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
    }


def spread(
    folder: Path,
    needs: Mapping[str, frozenset[str]],
    nodes: Sequence[NodeStatus],
    *,
    racks: Mapping[str, str] | None = None,
    on_progress: Progress | None = None,
    timeout_s: float = 24 * 3600,
) -> list[dict[str, Any]]:
    """Give every node in `needs` (node id -> file names) its files; returns one result per
    transfer (FetchResult fields). Runs on the head, connected to the cluster; `folder` is
    the head's verified copy. Raises SpreadError when a node fails."""
    head = next(n for n in nodes if n.head)
    by_id = {n.node_id: n for n in nodes}
    order = [head.node_id] + [n.node_id for n in nodes if n.alive and not n.head]
    key = folder_key(folder, paths.cache_dir())
    rack_of = {n.node_id: racks[n.address] for n in nodes if racks and n.address in racks}
    results: list[dict[str, Any]] = []
    for wave in waves(head.node_id, order, needs, rack_of or None):
        results += _run_wave(wave, key, by_id, on_progress, timeout_s)
    return results


def _run_wave(
    wave: list[Transfer],
    key: str,
    by_id: Mapping[str, NodeStatus],
    on_progress: Progress | None,
    timeout_s: float,
) -> list[dict[str, Any]]:
    token = secrets.token_urlsafe(32)
    host_class: Any = ray.remote(SeedHost)
    fetch_task: Any = ray.remote(_fetch)
    seeds = {
        s: host_class.options(**_pinned(s)).remote(by_id[s].address, key, token)
        for s in {t.seed for t in wave}
    }
    try:
        try:
            urls = {s: ray.get(a.url.remote(), timeout=60) for s, a in seeds.items()}
        except ray.exceptions.RayError as exc:
            cause = str(exc).strip().splitlines()[-1]
            raise SpreadError(f"the seed could not serve the model: {cause}") from None
        refs = {
            fetch_task.options(**_pinned(t.node)).remote(
                urls[t.seed], token, by_id[t.node].address, key, sorted(t.files)
            ): t
            for t in wave
        }
        return _wait(refs, seeds, by_id, on_progress, timeout_s)
    finally:
        for actor in seeds.values():
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(actor.stop.remote(), timeout=10)
            ray.kill(actor)


def _wait(
    refs: dict[Any, Transfer],
    seeds: Mapping[str, Any],
    by_id: Mapping[str, NodeStatus],
    on_progress: Progress | None,
    timeout_s: float,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    pending, done = list(refs), []
    while pending:
        if time.monotonic() > deadline:
            raise SpreadError(f"the spread did not finish within {timeout_s:.0f}s")
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        for ref in ready:
            t = refs[ref]
            try:
                done.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                cause = str(exc).strip().splitlines()[-1]
                raise SpreadError(f"node {by_id[t.node].address}: {cause}") from None
        if on_progress is not None:
            on_progress(_progress(seeds, by_id))
    if on_progress is not None:
        on_progress(_progress(seeds, by_id))
    return done


def _progress(
    seeds: Mapping[str, Any], by_id: Mapping[str, NodeStatus]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for seed, actor in seeds.items():
        stats = ray.get(actor.stats.remote(), timeout=30)
        for node, report in stats["progress"].items():
            out[node] = {**report, "from": by_id[seed].address, "sent": stats["sent"].get(node, 0)}
    return out


def replica_needs(
    folder: Path, bundle_nodes: Mapping[int, str], tp: int, pp: int
) -> dict[str, frozenset[str]]:
    """Files per node id for one placed replica: TP group g (bundles g*tp ..) runs stage g.
    A replica in one bundle (inside a node) needs every file on that node."""
    names = list(cache.read_marker(folder)["files"])  # type: ignore[call-overload]
    if len(bundle_nodes) == 1:
        return {bundle_nodes[0]: frozenset(names)}
    stages: dict[str, list[int]] = {}
    for g in range(pp):
        stages.setdefault(bundle_nodes[g * tp], []).append(g)
    return {n: frozenset(files_for_stages(folder, names, pp, s)) for n, s in stages.items()}


def spread_for_replica(
    model_path: str,
    bundle_nodes: Mapping[int, str],
    tp: int,
    pp: int,
    nodes: Sequence[NodeStatus],
    state_dir: Path,
) -> str | None:
    """Before a replica starts (`up`, a restart): give its nodes the files they need from the
    head, verified. Nothing to do for a folder deepfleet did not pull (no complete-marker:
    "the same path on every node"). Returns why it failed, or None."""
    folder = Path(model_path)
    if not cache.is_complete(folder):
        return None
    needs = replica_needs(folder, bundle_nodes, tp, pp)

    def report(progress: dict[str, dict[str, Any]]) -> None:
        write_progress(state_dir, folder_key(folder, paths.cache_dir()), progress)

    try:
        spread(folder, needs, nodes, on_progress=report)
    except (SpreadError, ray.exceptions.RayError) as exc:
        return f"weights spread failed: {exc}"
    return None
