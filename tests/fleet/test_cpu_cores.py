"""CPU replicas of one machine each own their cores (VLLM_CPU_OMP_THREADS_BIND), also when the
autoscaler adds one: vLLM's CPU build pins one OpenMP thread per core, and two engines pinned to
one core slow each other many times over (CI of stop 27: a second replica started in 445 s,
beside one that had been planned alone and bound every core). Each replica's processes may run
on every core but the other replicas' bound ones: `import torch` visits each allowed core, and
on one where a busy engine's OpenMP worker is bound it stalled for minutes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import yaml

from deepfleet.config.load import validate
from deepfleet.engines.base import LaunchSpec
from deepfleet.engines.vllm import VllmAdapter
from deepfleet.fleet.autoscaler import at_count
from deepfleet.fleet.cpu_share import cpu_affinity
from deepfleet.fleet.process import ManagedProcess
from deepfleet.fleet.replicas import MachineFacts, plan_local

GiB = 2**30
FOUR_CORES = MachineFacts([0, 1, 2, 3], 16 * GiB, {"nvidia": [], "ascend": []})


def test_an_added_cpu_replica_never_shares_the_cores_of_one_planned_when_fewer_ran() -> None:
    cfg = validate(yaml.safe_load("models:\n  - name: smol\n    replicas: {min: 0, max: 2}\n"))
    (alone,) = plan_local(cfg, {"smol": "/m"}, FOUR_CORES)
    scaled = cfg.model_copy(update={"models": [at_count(cfg.models[0], 2)]})
    first, added = plan_local(scaled, {"smol": "/m"}, FOUR_CORES)
    assert alone.cpu_threads == first.cpu_threads == "0,1"  # the same cores at 1 and at 2
    assert added.cpu_threads == "2,3"
    assert at_count(cfg.models[0], 2).fixed_replicas == 2


def test_fixed_counts_split_the_cores_as_before() -> None:
    one = validate(yaml.safe_load("models:\n  - name: smol\n"))
    (only,) = plan_local(one, {"smol": "/m"}, FOUR_CORES)
    assert only.cpu_threads is None  # a lone replica: vLLM's own choice
    two = validate(yaml.safe_load("models:\n  - name: smol\n    replicas: 2\n"))
    assert [p.cpu_threads for p in plan_local(two, {"smol": "/m"}, FOUR_CORES)] == ["0,1", "2,3"]
    assert at_count(two.models[0], 5) is two.models[0]  # only ranges are rescaled


@pytest.mark.parametrize(
    ("cores", "index", "count", "allowed"),
    [
        ([0, 1], 0, 1, None),  # a lone replica: inherit
        ([0, 1], 1, 2, (1,)),
        ([0, 1, 2], 0, 2, (0, 2)),  # core 2 is nobody's: both may use it
        ([0, 1, 2, 3], 1, 2, (2, 3)),
        ([0, 1], 0, 4, None),  # nobind: no core is anybody's
    ],
)
def test_a_replica_may_run_on_every_core_but_the_others_bound_ones(
    cores: list[int], index: int, count: int, allowed: tuple[int, ...] | None
) -> None:
    assert cpu_affinity(cores, index, count) == allowed


def test_planned_cpu_replicas_carry_their_affinity_to_the_engine_command() -> None:
    cfg = validate(yaml.safe_load("models:\n  - name: smol\n    replicas: {min: 1, max: 2}\n"))
    (alone,) = plan_local(cfg, {"smol": "/m"}, FOUR_CORES)
    assert alone.cpu_affinity == (0, 1)  # already clear of the core the added one will bind
    assert VllmAdapter(cpu=True).launch_spec(alone).cpus == (0, 1)
    own = validate(
        yaml.safe_load(
            "models:\n  - name: smol\n    replicas: {min: 1, max: 2}\n"
            "    engine_env: {VLLM_CPU_OMP_THREADS_BIND: nobind}\n"
        )
    )
    (theirs,) = plan_local(own, {"smol": "/m"}, FOUR_CORES)
    assert VllmAdapter(cpu=True).launch_spec(theirs).cpus is None  # the user chose the cores


def test_a_started_process_runs_only_on_its_cpus(tmp_path: Path) -> None:
    mine = min(os.sched_getaffinity(0))
    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    proc = ManagedProcess(LaunchSpec([sys.executable, "-c", code], cpus=(mine,)), tmp_path / "l")

    async def scenario() -> int:
        await proc.start()
        return await asyncio.wait_for(proc.wait(), 60)

    assert asyncio.run(scenario()) == 0
    log = (tmp_path / "l").read_text()
    assert f"(CPUs {mine})" in log and log.rstrip().endswith(f"[{mine}]"), log
