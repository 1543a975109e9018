"""Helpers of the supervisor actor: core binding, load, and the engine command it runs."""

from __future__ import annotations

import pytest

from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.ray.actor import (
    engine_cores,
    guarded,
    in_placement_group,
    load_from_metrics,
    parse_cores,
)


@pytest.mark.parametrize(
    ("text", "cores"), [("0", [0]), ("0-3", [0, 1, 2, 3]), ("4,0-1", [0, 1, 4]), ("", [])]
)
def test_parse_cores(text: str, cores: list[int]) -> None:
    assert parse_cores(text) == cores


@pytest.mark.parametrize(
    ("slot", "env", "bind"),
    [
        (None, {"DEEPFLEET_NODE_CORES": "0-3"}, None),  # not a CPU replica
        ((0, 1), {"DEEPFLEET_NODE_CORES": "1"}, "1"),  # a lone replica on a restricted node
        ((0, 1), {}, None),  # a lone replica: vLLM chooses
        ((1, 2), {"DEEPFLEET_NODE_CORES": "0-3"}, "2,3"),
        ((0, 4), {"DEEPFLEET_NODE_CORES": "0-1"}, "nobind"),
    ],
)
def test_engine_cores(slot: tuple[int, int] | None, env: dict[str, str], bind: str | None) -> None:
    assert engine_cores(slot, env) == bind


def test_load_is_running_plus_waiting() -> None:
    page = (
        "# HELP vllm:num_requests_running x\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="m"} 2.0\n'
        "vllm:num_requests_swapped 9\n"
    )
    assert load_from_metrics(page) == 5.0


def test_spanning_replica_runs_vllm_through_the_entry_point_under_the_guard() -> None:
    spec = LaunchSpec(
        ["py", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"], {"A": "1"}
    )
    inside = in_placement_group(spec, "fleet/m-0/1", "deepfleet", {"RAY_ADDRESS": "h:6379"})
    assert inside.argv == ["py", "-m", "deepfleet.fleet.ray.vllm_entry", "--model", "m"]
    assert inside.env == {
        "A": "1",
        "RAY_ADDRESS": "h:6379",
        "DEEPFLEET_PLACEMENT_GROUP": "fleet/m-0/1",
        "DEEPFLEET_RAY_NAMESPACE": "deepfleet",
    }
    wrapped = guarded(inside, 4242, "py")
    assert wrapped.argv[:5] == ["py", "-m", "deepfleet.fleet.ray.guard", "4242", "--"]
    assert wrapped.argv[5:] == inside.argv and wrapped.env == inside.env
