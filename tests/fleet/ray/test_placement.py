"""A replica's layout as placement-group bundles, and the check that PACK kept TP groups whole."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deepfleet.config.schema import ModelSpec
from deepfleet.engines.base import ReplicaPlan
from deepfleet.fleet.ray.placement import (
    CPU_SPAN_REFUSAL,
    PlacementError,
    actor_options,
    layout_text,
    nodes_in_order,
    placement_for,
    split_tp_groups,
)


def plan(tp: int, pp: int, engine: str = "vllm") -> ReplicaPlan:
    model = ModelSpec(name="m", source="deepseek-ai/DeepSeek-R1", engine=engine)  # type: ignore[arg-type]
    return ReplicaPlan(
        model=model, replica_id="m-0", model_path="/m", host="", port=0, tp=tp, pp=pp
    )


@pytest.mark.parametrize(
    ("tp", "pp", "key", "per_node", "bundles", "strategy", "actor"),
    [
        (1, 1, "GPU", 8, [{"GPU": 1.0}], "STRICT_PACK", {"num_cpus": 0, "num_gpus": 1.0}),
        (4, 1, "GPU", 8, [{"GPU": 4.0}], "STRICT_PACK", {"num_cpus": 0, "num_gpus": 4.0}),
        (4, 2, "GPU", 8, [{"GPU": 8.0}], "STRICT_PACK", {"num_cpus": 0, "num_gpus": 8.0}),
        # The reference plan: TP 8 inside a node, PP 2 across two nodes.
        (8, 2, "GPU", 8, [{"GPU": 1.0}] * 16, "PACK", {"num_cpus": 0, "num_gpus": 0}),
        (8, 1, "NPU", 8, [{"NPU": 8.0}], "STRICT_PACK",
         {"num_cpus": 0, "num_gpus": 0, "resources": {"NPU": 8.0}}),
        (1, 1, "CPU", 1, [{"CPU": 2.0}], "STRICT_PACK", {"num_cpus": 2.0, "num_gpus": 0}),
    ],
)  # fmt: skip
def test_bundles_strategy_and_what_the_supervisor_holds(
    tp: int, pp: int, key: str, per_node: int, bundles: list[dict[str, float]], strategy: str,
    actor: dict[str, object],
) -> None:  # fmt: skip
    where = placement_for(plan(tp, pp), key, per_node, cpus_per_replica=2)
    assert [dict(b) for b in where.bundles] == bundles
    assert where.strategy == strategy
    assert where.spans_nodes == (len(bundles) > 1)
    assert actor_options(where) == actor


@pytest.mark.parametrize(
    ("tp", "pp", "engine", "key", "why"),
    [
        (1, 2, "vllm-cpu", "CPU", CPU_SPAN_REFUSAL[:30]),
        (16, 1, "vllm", "GPU", "must divide devices_per_node"),
        (3, 4, "vllm", "GPU", "must divide devices_per_node"),
        (8, 2, "sglang", "GPU", "has no Ray executor"),
    ],
)
def test_layouts_that_cannot_be_placed_say_why(
    tp: int, pp: int, engine: str, key: str, why: str
) -> None:
    with pytest.raises(PlacementError, match=why):
        placement_for(plan(tp, pp, engine), key, 8 if key != "CPU" else 1)


def test_split_tp_groups_finds_a_group_on_two_nodes() -> None:
    whole = {i: "a" if i < 8 else "b" for i in range(16)}
    assert split_tp_groups(whole, 8) == []
    torn = {**whole, 7: "b", 8: "a"}
    assert split_tp_groups(torn, 8) == [0, 1]
    assert split_tp_groups({0: "a", 1: "b", 2: "b", 3: "b"}, 2) == [0]


def test_nodes_in_bundle_order() -> None:
    assert nodes_in_order({2: "b", 0: "a", 1: "a", 3: "c"}) == ["a", "b", "c"]


def test_describe_for_status_lines() -> None:
    where = placement_for(replace(plan(8, 2)), "GPU", 8)
    assert where.describe() == "16 x {GPU: 1} PACK"


def dp_plan(tp: int, dp: int, engine_args: dict[str, object] | None = None) -> ReplicaPlan:
    """A DP-attention replica as replica_plan makes it: the planner's data_parallel_size in
    the engine defaults, the config's engine_args on the model."""
    model = ModelSpec(  # type: ignore[arg-type]
        name="m", source="deepseek-ai/DeepSeek-R1", engine_args=engine_args or {}
    )
    defaults = {"data_parallel_size": dp, "enable_expert_parallel": True}
    return ReplicaPlan(
        model=model, replica_id="m-0", model_path="/m", host="", port=0, tp=tp,
        engine_defaults=defaults,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("tp", "dp", "engine_args", "gpus"),
    [
        (1, 8, None, 8.0),  # the planner's R1 pick on H200: dp-attention 8 + EP
        (2, 4, None, 8.0),
        (1, 2, None, 2.0),
        (1, 8, {"data-parallel-size": 4}, 4.0),  # the config's engine_args win
    ],
)
def test_every_data_parallel_rank_gets_a_device_on_the_replicas_node(
    tp: int, dp: int, engine_args: dict[str, object] | None, gpus: float
) -> None:
    where = placement_for(dp_plan(tp, dp, engine_args), "GPU", 8)
    assert where.bundles == ({"GPU": gpus},)
    assert where.strategy == "STRICT_PACK"
    assert actor_options(where) == {"num_cpus": 0, "num_gpus": gpus}


@pytest.mark.parametrize(
    ("tp", "dp", "engine_args"),
    [(2, 8, None), (1, 8, {"data_parallel_size_local": 4})],
)
def test_data_parallel_ranks_across_nodes_are_refused(
    tp: int, dp: int, engine_args: dict[str, object] | None
) -> None:
    with pytest.raises(PlacementError, match="must stay on one node of 8"):
        placement_for(dp_plan(tp, dp, engine_args), "GPU", 8)


def test_status_layout_names_the_data_parallel_ranks() -> None:
    assert layout_text(dp_plan(1, 8)) == "tp 1 x pp 1 x dp 8"
    assert layout_text(plan(8, 2)) == "tp 8 x pp 2"
