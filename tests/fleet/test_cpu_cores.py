"""CPU replicas of one machine each own their cores (VLLM_CPU_OMP_THREADS_BIND), also when the
autoscaler adds one: vLLM's CPU build pins one OpenMP thread per core, and two engines pinned to
one core slow each other many times over (CI of stop 27: a second replica started in 445 s,
beside one that had been planned alone and bound every core)."""

from __future__ import annotations

import yaml

from deepfleet.config.load import validate
from deepfleet.fleet.autoscaler import at_count
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
