"""`deepfleet top`'s arithmetic over real exposition text (the simulator's vLLM metrics and the
gateway's own registry), with an injected fetcher and clock."""

from __future__ import annotations

import os

import pytest
from prometheus_client import generate_latest

from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.observability.samples import Samples, quantile
from deepfleet.observability.top import TopSampler
from deepfleet.sim.metrics import EngineMetrics

GW = "http://127.0.0.1:8000"
E0, E1 = "http://127.0.0.1:9000", "http://127.0.0.1:9001"


def state() -> FleetState:
    return FleetState(
        controller_pid=os.getpid(), gateway_url=GW, models=[ModelRoute("m", "round_robin")],
        replicas=[ReplicaStatus("m-0", "m", "vllm", E0, ReplicaState.READY, restarts=1),
                  ReplicaStatus("m-1", "m", "vllm", E1, ReplicaState.RESTARTING)],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {1.0: 0, 2.0: 10, float("inf"): 10}, 1.5),
        (0.99, {0.1: 5, 1.0: 10, float("inf"): 10}, 0.1 + 0.9 * (9.9 - 5) / 5),
        (0.99, {1.0: 0, float("inf"): 4}, 1.0),  # in +Inf: the largest finite bound
        (0.5, {1.0: 0, float("inf"): 0}, None),
        (0.5, {}, None),
    ],
)
def test_quantile_matches_prometheus(
    q: float, buckets: dict[float, float], expected: float | None
) -> None:
    assert quantile(q, buckets) == pytest.approx(expected)


async def test_rates_quantiles_and_hit_rate_over_the_window() -> None:
    engine = EngineMetrics("m", block_size=16, num_blocks=100)
    gateway = GatewayMetrics()
    now = [0.0]
    texts: dict[str, str | None] = {}

    async def fetch(url: str) -> str | None:
        return texts.get(url.removesuffix("/metrics"))

    def publish() -> None:
        texts[E0] = engine.render()
        texts[GW] = generate_latest(gateway.registry).decode()

    sampler = TopSampler(state, fetch, window_s=30, clock=lambda: now[0])
    engine.prompt_tokens, engine.generation_tokens = 100, 1000
    engine.prefix_queries, engine.prefix_hits = 100, 0
    for _ in range(10):
        engine.ttft.observe(0.005)
    gateway.requests.labels("m", "200", "k").inc(5)
    publish()
    first = await sampler.frame()
    assert first is not None and first.window_s is None
    assert first.replicas[0].output_tps is None  # no rate from one sample
    assert first.replicas[0].ttft_p50 == pytest.approx(0.003)  # all time: 10 obs in (1ms, 5ms]

    now[0] = 10.0
    engine.prompt_tokens, engine.generation_tokens = 300, 3000
    engine.prefix_queries, engine.prefix_hits = 300, 100
    engine.running, engine.waiting, engine.kv_usage = 4, 2, 0.25
    for _ in range(10):
        engine.ttft.observe(0.3)
    gateway.requests.labels("m", "200", "k").inc(15)
    gateway.requests.labels("m", "503", "k").inc(2)
    gateway.output_tokens.labels("m").inc(2000)
    gateway.ttft.labels("m").observe(0.2)
    publish()
    frame = await sampler.frame()
    assert frame is not None and frame.window_s == 10.0 and frame.gateway_up
    r0, r1 = frame.replicas
    assert (r0.up, r0.running, r0.waiting, r0.kv_usage) == (True, 4, 2, 0.25)
    assert (r0.prompt_tps, r0.output_tps) == (20.0, 200.0)
    assert r0.hit_rate == pytest.approx(0.5)
    assert 0.25 < r0.ttft_p50 <= 0.5 and 0.25 < r0.ttft_p99 <= 0.5  # type: ignore[operator]
    assert r0.restarts == 1
    assert (r1.up, r1.state, r1.output_tps) == (False, "restarting", None)
    (m,) = frame.models
    assert (m.ready, m.replicas) == (1, 2)
    assert (m.rps, m.error_rps, m.output_tps) == (1.7, 0.2, 200.0)
    assert m.ttft_p50 is not None and 0.1 < m.ttft_p50 <= 0.25


async def test_counter_reset_counts_from_zero() -> None:
    texts = {E0: "# TYPE vllm:generation_tokens_total counter\n"
                 'vllm:generation_tokens_total{engine="0"} 5000\n'}  # fmt: skip
    now = [0.0]

    async def fetch(url: str) -> str | None:
        return texts.get(url.removesuffix("/metrics"))

    sampler = TopSampler(state, fetch, clock=lambda: now[0])
    await sampler.frame()
    texts[E0] = texts[E0].replace("5000", "40")  # the engine restarted
    now[0] = 2.0
    frame = await sampler.frame()
    assert frame is not None and not frame.gateway_up
    assert frame.replicas[0].output_tps == 20.0


async def test_no_state_no_frame() -> None:
    async def fetch(url: str) -> str | None:
        raise AssertionError("nothing to fetch")

    assert await TopSampler(lambda: None, fetch).frame() is None


def test_samples_sum_matching_series() -> None:
    s = Samples.parse('x_total{a="1",b="u"} 2\nx_total{a="1",b="v"} 3\nx_total{a="2"} 7\n')
    assert s.total("x_total") == 12
    assert s.total("x_total", {"a": "1"}) == 5
    assert s.total("x_total", where=lambda labels: labels.get("b") == "v") == 3
    assert s.total("y") is None


async def test_a_target_answering_something_else_counts_as_down() -> None:
    async def fetch(url: str) -> str | None:
        return "<html>not metrics</html>"

    frame = await TopSampler(state, fetch).frame()
    assert frame is not None and not frame.gateway_up
    assert [r.up for r in frame.replicas] == [False, False]
