"""Where a local engine publishes its KV events, and which side binds (kvcache/endpoints.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepfleet.kvcache.endpoints import (
    bound_endpoint,
    data_parallel_ranks,
    local_events_endpoint,
    replica_events_endpoint,
    subscriber_connects,
)


@pytest.mark.parametrize(
    ("depth", "engine_args", "expected"),
    [
        (1, {}, "ipc"),
        (1, {"data_parallel_size": 1}, "ipc"),
        # vLLM raises on an ipc:// endpoint for data-parallel ranks above 0
        (1, {"data_parallel_size": 2}, "tcp"),
        (1, {"data-parallel-size": 4}, "tcp"),
        (120, {}, "tcp"),  # over the 107 bytes of a Unix socket path
    ],
)
def test_local_engines_get_a_socket_in_the_state_dir_unless_they_cannot(
    tmp_path: Path, depth: int, engine_args: dict[str, Any], expected: str
) -> None:
    state_dir = tmp_path / ("d" * depth)
    endpoint = local_events_endpoint(state_dir, 5557, engine_args)
    if expected == "ipc":
        assert endpoint == f"ipc://{state_dir}/kv-5557.ipc"
    else:
        assert endpoint == "tcp://127.0.0.1:5557"
    assert local_events_endpoint(state_dir, None, engine_args) is None  # no KV events


def test_the_subscriber_connects_where_the_engine_binds() -> None:
    assert subscriber_connects("ipc:///s/kv-1.ipc")
    assert not subscriber_connects("tcp://127.0.0.1:5557")  # the engine connects: we bind
    # A Ray replica's engine bound its node's address itself (on 127.0.0.x in the netns
    # tests, so the address alone cannot tell): the subscriber connects.
    assert subscriber_connects("tcp://127.0.0.2:41234", engine_bound=True)
    assert replica_events_endpoint(None, 5557) == "tcp://127.0.0.1:5557"  # an older fleet.json
    assert replica_events_endpoint("ipc:///s/kv-1.ipc", 1) == "ipc:///s/kv-1.ipc"


def test_data_parallel_ranks_read_either_spelling_the_later_winning() -> None:
    """A plan's default (data_parallel_size) merged with a user's data-parallel-size: the
    user's, as the engine's command line takes the later flag (the planner's default hid it)."""
    assert data_parallel_ranks({}) == 1
    assert data_parallel_ranks({"data-parallel-size": 2}) == 2
    assert data_parallel_ranks({"data_parallel_size": 1, "data-parallel-size": 4}) == 4


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"0": {"endpoint": "tcp://10.0.0.2:41234", "topic": "kv-events"}}, "tcp://10.0.0.2:41234"),
        ({"0": {"endpoint": "tcp://[fd00::2]:41234"}}, "tcp://[fd00::2]:41234"),
        ({"1": {"endpoint": "tcp://10.0.0.2:41235"}}, None),  # rank 0 only
        ({"0": {"endpoint": "tcp://*:0"}}, None),  # a vLLM that did not resolve the wildcard
        ({"0": {"endpoint": "tcp://*:5557"}}, None),  # bound on every address: not recorded
        ({"0": {"endpoint": "tcp://0.0.0.0:5557"}}, None),
        ({"0": {"endpoint": "ipc:///tmp/kv.ipc"}}, None),  # on the engine's node only
        ({}, None),  # no KV events configured
        (None, None),  # the engine has no /kv_event_sources (404)
        ({"0": "tcp://10.0.0.2:1"}, None),
    ],
)
def test_the_address_a_ray_replicas_engine_bound(sources: Any, expected: str | None) -> None:
    assert bound_endpoint(sources) == expected
