"""KV-aware routing through 2 gateways gives the hit rate of 1 (issue 23 item 3), on real
engines: the short version of benchmarks/kvcache/two_gateways.py (2 vLLM CPU replicas of the
bundled model, `gateway.instances: 2` behind HAProxy, the node's KV event relay)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from benchmarks.kvcache.two_gateways import config, measure, parse

from tests.e2e.conftest import running_fleet

pytestmark = pytest.mark.slow


def test_two_gateways_hit_like_one_and_a_restarted_one_catches_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The benchmark reads the bundled tokenizer; set for this test only (a module-level
    # os.environ write leaked into tests/weights/, whose pulls then refused to go online).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = parse(
        ["--groups", "2", "--users-per-group", "3", "--rounds", "3", "--system-len", "600",
         "--history-len", "600", "--kv-blocks", "64", "--repeats", "1", "--modes", "one,two"]
    )  # fmt: skip
    with running_fleet(tmp_path, config(args)) as fleet:
        out = asyncio.run(measure(fleet, args))
    runs = {r["mode"]: r for r in out["runs"]}
    assert all(r["failed"] == 0 for r in runs.values()), out
    # Through HAProxy both gateways routed, so each learned from the other's requests.
    assert all(n > 0 for n in runs["two"]["routed_by_gateway"]), out
    one, two = out["summary"]["one"]["hit_rate"], out["summary"]["two"]["hit_rate"]
    assert one > 0.3, out  # the workload reuses prefixes: routing has something to find
    assert abs(two - one) <= 0.05 * one, out
    # Gateway 1, killed and started again, knows every block without a new event.
    caught = out["catch_up"]
    assert caught["restarted_gateway1_index_blocks"] >= caught["gateway0_index_blocks"] > 0, out
