"""The autoscaling benchmark's --short mode (SIMULATOR, ~5 s): the three scalers on the same
trace, checked for what must hold whatever the constants: the fixed fleet at peak meets the
targets and uses the most replica-hours, deepfleet's scaler meets them with fewer, and the
queue-threshold rule misses more than deepfleet's."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.autoscale import diurnal


def test_short_run_orders_the_scalers(tmp_path: Path) -> None:
    out = tmp_path / "short.json"
    result = diurnal.main(["--short", "--json", str(out)])
    assert json.loads(out.read_text())["label"].startswith("SIMULATOR")
    slo, queue, fixed = result["results"]
    assert [slo["requests"], queue["requests"]] == [fixed["requests"]] * 2 > [1000] * 2
    assert fixed["slo_attainment"] >= 0.99
    assert fixed["replica_hours_vs_fixed"] == 1.0
    assert slo["slo_attainment"] >= 0.99
    assert slo["replica_hours"] < 0.9 * fixed["replica_hours"]
    assert queue["slo_attainment"] < slo["slo_attainment"]
    assert slo["peak_replicas"] <= fixed["peak_replicas"]
    assert slo["scaling_decisions"] > 0 and slo["decision_log_head"]


def test_the_benchmark_replica_is_the_calibrated_one() -> None:
    from deepfleet.sim.calibration import measured_model

    assert diurnal.measured_model() == measured_model()
