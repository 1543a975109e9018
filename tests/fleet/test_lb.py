"""`gateway.instances: 3` behind a real HAProxy, with fake engines: one gateway SIGKILLed under
32 streams fails only the streams it carried; one SIGTERMed drains (its streams finish); new
requests succeed at once; nothing hangs."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.helpers.lb_scenario import run

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")


def test_one_gateway_killed_under_32_streams(tmp_path: Path) -> None:
    report = run(tmp_path, streams=32, gateways=3)
    print(asdict(report))
    assert report.carried_by_victim > 0, "leastconn gave the victim no stream"
    assert report.failed == report.failed_on_victim == report.carried_by_victim, report
    assert report.failed_elsewhere == 0 and report.hangs == 0, report
    assert report.new_requests >= 10 and report.new_ok == report.new_requests, report
    assert report.first_new_ok_after_kill_s is not None and report.first_new_ok_after_kill_s < 2


def test_one_gateway_stopped_under_32_streams_drains(tmp_path: Path) -> None:
    report = run(tmp_path, streams=32, gateways=3, sig="SIGTERM")
    print(asdict(report))
    assert report.carried_by_victim > 0, "leastconn gave the victim no stream"
    assert report.failed == 0 and report.hangs == 0, report
    assert report.new_requests >= 10 and report.new_ok == report.new_requests, report
