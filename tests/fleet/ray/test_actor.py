"""Helpers of the supervisor actor: core binding, load, the engine command it runs, and what
it sets on its node (address, NIXL side channel, KV events bound on the node's IP)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import ray
from aiohttp import web

from deepfleet.engines.base import LaunchSpec, ReplicaPlan
from deepfleet.fleet.pools import NIXL_HOST_ENV, NIXL_PORT_ENV
from deepfleet.fleet.ports import free_port, port_in_use
from deepfleet.fleet.ray.actor import (
    EngineHost,
    engine_affinity,
    engine_cores,
    guarded,
    in_placement_group,
    load_from_metrics,
    parse_cores,
    record_events,
)
from deepfleet.fleet.state import ReplicaState, ReplicaStatus
from deepfleet.fleet.supervisor import SupervisorPolicy
from deepfleet.kvcache.endpoints import ENGINE_PICKS
from tests.deploy.test_planned import _placed


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


@pytest.mark.parametrize(
    ("slot", "env", "allowed"),
    [
        (None, {"DEEPFLEET_NODE_CORES": "0-3"}, None),  # not a CPU replica
        ((0, 1), {"DEEPFLEET_NODE_CORES": "1"}, None),  # a lone replica: the actor's own
        ((1, 2), {"DEEPFLEET_NODE_CORES": "0-4"}, (2, 3, 4)),  # 4 is nobody's
    ],
)
def test_engine_affinity_leaves_out_only_the_other_slots_cores(
    slot: tuple[int, int] | None, env: dict[str, str], allowed: tuple[int, ...] | None
) -> None:
    assert engine_affinity(slot, env) == allowed


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


def launched(plan: ReplicaPlan) -> tuple[ReplicaPlan, LaunchSpec]:
    """What the supervisor actor starts for `plan` on this node (Ray's node IP, no cluster)."""
    status = ReplicaStatus(plan.replica_id, plan.model.name, plan.model.engine, "")
    return EngineHost(plan, status, SupervisorPolicy())._launch()


def test_a_nixl_engine_advertises_its_node_and_a_free_port_per_dp_rank() -> None:
    """The planner's long-document R1 on 8 x 8 H200 (P/D 5:3, NIXL, dp-attention 8): each
    engine's side channel is its node's address (vLLM would say localhost to decode engines
    on other nodes) and a block of 8 free ports of its own (not the shared 5600)."""
    ip = ray.util.get_node_ip_address()
    roles = []
    for plan, _ in _placed("long-docs"):
        assert NIXL_PORT_ENV not in plan.env_defaults  # the head cannot know the node
        mine, spec = launched(plan)
        assert mine.host == ip and spec.env[NIXL_HOST_ENV] == ip
        base = int(spec.env[NIXL_PORT_ENV])
        block = range(base, base + 8)
        assert 5600 not in block and mine.port not in block
        assert not any(port_in_use(ip, p) for p in block)
        roles.append(plan.role)
    assert roles == ["prefill"] * 5 + ["decode"] * 3


def test_an_aggregated_engine_gets_no_side_channel() -> None:
    for plan, _ in _placed("chat"):
        env = launched(plan)[1].env
        assert NIXL_HOST_ENV not in env and NIXL_PORT_ENV not in env


def test_a_replica_publishes_kv_events_on_its_nodes_ip_at_a_port_of_its_choosing() -> None:
    """vLLM binds `tcp://*:0` on VLLM_HOST_IP (this node's IP, not every address) and picks
    the port itself: a port picked here could be taken by another process before it binds."""
    ip = ray.util.get_node_ip_address()
    plan, _ = _placed("chat")[0]
    assert plan.kv_events_port is None  # the head cannot know the node
    mine, spec = launched(plan)
    assert (mine.kv_events_port, mine.kv_events_endpoint) == (0, ENGINE_PICKS)
    assert spec.env["VLLM_HOST_IP"] == ip
    config = json.loads(spec.argv[spec.argv.index("--kv-events-config") + 1])
    assert config["endpoint"] == "tcp://*:0" and config["enable_kv_cache_events"]


class EventSources:
    """An engine's HTTP side: GET /kv_event_sources as vLLM answers it (None: a 404)."""

    def __init__(self, answer: dict[str, Any] | None) -> None:
        self.answer = answer
        self.asked = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> EventSources:
        app = web.Application()
        app.router.add_get("/kv_event_sources", self._sources)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _sources(self, request: web.Request) -> web.Response:
        self.asked += 1
        if self.answer is None:
            raise web.HTTPNotFound()
        return web.json_response(self.answer)


def ready_host(url: str, pid: int) -> EngineHost:
    plan, _ = _placed("chat")[0]
    status = ReplicaStatus(plan.replica_id, plan.model.name, plan.model.engine, url)
    status.state, status.pid = ReplicaState.READY, pid
    # What an earlier placement left in the status the controller handed over.
    record_events(status, "tcp://10.9.9.9:1")
    return EngineHost(plan, status, SupervisorPolicy())


async def test_a_ready_engines_kv_events_address_is_reported_with_its_state() -> None:
    bound = {"0": {"endpoint": "tcp://127.0.0.2:41234", "topic": "kv-events"}}
    async with EventSources(bound) as engine:
        host = ready_host(engine.url, pid=100)
        st = await host.status()
        assert (st.kv_events_endpoint, st.kv_events_port, st.kv_events_bound) == (
            "tcp://127.0.0.2:41234", 41234, True,
        )  # fmt: skip
        await host.status()
        assert engine.asked == 1  # once per engine process
        engine.answer = {"0": {"endpoint": "tcp://127.0.0.2:41999"}}
        st.pid = 101  # the supervisor started the engine again: it bound another port
        assert (await host.status()).kv_events_endpoint == "tcp://127.0.0.2:41999"
        assert engine.asked == 2


async def test_an_engine_that_names_no_kv_events_address_leaves_none() -> None:
    async with EventSources(None) as engine:  # an engine without the route
        host = ready_host(engine.url, pid=100)
        st = await host.status()
        assert (st.kv_events_endpoint, st.kv_events_port, st.kv_events_bound) == (
            None, None, False,
        )  # fmt: skip
        await host.status()
        assert engine.asked == 1
