"""The cold-start estimate: bytes per node from the layout, times from the rates, and the
reference plan (DeepSeek-R1 on 8 nodes x 8 GPUs) against the issue's targets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import ClusterShape, plan
from deepfleet.planner.loadtime import Bandwidth, bandwidth, cold_start, for_layout, node_bytes
from deepfleet.planner.report import plan_json, plan_text

GB = 10**9


@pytest.mark.parametrize(
    ("tp", "pp", "per_node", "expected"),
    [
        (8, 1, 8, 1000),  # a replica inside a node holds everything
        (4, 2, 8, 1000),  # both stages inside one node
        (8, 2, 8, 500),  # one stage per node
        (8, 4, 8, 250),
        (4, 4, 8, 500),  # two stages per node
        (8, 3, 8, 334),  # rounded up
    ],
)
def test_node_bytes(tp: int, pp: int, per_node: int, expected: int) -> None:
    assert node_bytes(1000, tp, pp, per_node) == expected


def test_times_follow_the_rates() -> None:
    bw = Bandwidth(disk_bps=2 * GB, lan_bps=1 * GB, hub_bps=0.1 * GB, init_s=30)
    c = cold_start(800 * GB, 8, 4, 4, 8, bw)
    assert c.node_bytes == 200 * GB
    assert c.hub_s == pytest.approx(8000)
    assert c.lan_s == pytest.approx(600)  # the head sends 3 x 200 GB
    assert c.load_s == pytest.approx(100)
    assert c.from_local_disk_s == pytest.approx(130)
    assert c.with_lan_s == pytest.approx(730)
    assert c.from_empty_s == pytest.approx(8730)
    alone = cold_start(800 * GB, 8, 1, 1, 8, bw)
    assert alone.lan_s == 0 and alone.node_bytes == 800 * GB


def test_bandwidth_from_config_units() -> None:
    bw = bandwidth(disk_gb_s=3, lan_gb_s=10, hub_mb_s=50, engine_init_s=0)
    assert (bw.disk_bps, bw.lan_bps, bw.hub_bps, bw.init_s) == (3e9, 10e9, 50e6, 0)
    assert bandwidth() == Bandwidth()


def test_reference_plan_states_bytes_per_node_and_meets_the_targets() -> None:
    """R1 on 8 nodes x 8 A100-40GB (the planning document's cluster), with the default rates:
    under 5 minutes from local NVMe, under 15 minutes with the LAN spread."""
    p = plan(load_model_facts("DeepSeek-R1"), ClusterShape(get_device("A100-40GB"), 8, 8))
    best = p.recommended
    assert best is not None
    c = for_layout(p.weight_bytes, best, 8)
    assert c.nodes == 8 and c.node_bytes == -(-p.weight_bytes // best.pp)
    assert c.from_local_disk_s < 5 * 60
    assert c.with_lan_s < 15 * 60
    doc = plan_json(p)["cold_start"]
    assert doc["bytes_per_node"] == c.node_bytes and doc["nodes"] == 8
    assert "GB per node on 8 node(s)" in plan_text(p)
    print(f"reference plan {best.label}: {json.dumps(doc)}")


def test_plan_cli_takes_the_rates() -> None:
    args = [sys.executable, "-m", "deepfleet", "plan", "--model", "DeepSeek-R1", "--gpu",
            "A100-40GB", "--gpus-per-node", "8", "--nodes", "8", "--json"]  # fmt: skip
    slow = json.loads(subprocess.run([*args, "--lan-gb-s", "1"], capture_output=True,
                                     text=True, check=True).stdout)["cold_start"]  # fmt: skip
    fast = json.loads(subprocess.run([*args, "--lan-gb-s", "10"], capture_output=True,
                                     text=True, check=True).stdout)["cold_start"]  # fmt: skip
    assert slow["assumed_lan_bps"] == 1e9 and fast["assumed_lan_bps"] == 10e9
    assert slow["lan_s"] == pytest.approx(10 * fast["lan_s"], rel=0.01)
