"""Runs tests/fleet/ray/spread (a 2-node weights spread on Ray with the loopback hub) inside a
network namespace whose only interface is loopback, as tests/fleet/ray/test_netns.py does for
the cluster suite."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fleet.ray.cluster.conftest import IN_NETNS
from tests.fleet.ray.test_netns import ROOT, _namespace_prefix

INNER = (
    "ip link set lo up && exec {python} -m pytest tests/fleet/ray/spread -q -s -p no:cacheprovider"
)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_spread_suite_in_a_loopback_only_network_namespace() -> None:
    if IN_NETNS:
        pytest.skip("already inside a network namespace: tests/fleet/ray/spread runs directly")
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("cannot create a network namespace here (unshare --net not permitted)")
    r = subprocess.run(
        [*prefix, "sh", "-c", INNER.format(python=sys.executable)],
        cwd=ROOT, capture_output=True, text=True, timeout=1480,
    )  # fmt: skip
    print(r.stdout[-20000:])
    assert r.returncode == 0, (r.stdout + r.stderr)[-8000:]
