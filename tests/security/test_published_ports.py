"""Acceptance of issue 19: no rendered bundle makes a port reachable beyond loopback except
the gateway's (compose `ports`, `docker run -p`, Services of type NodePort or LoadBalancer,
hostPorts), and every generated secret is random per render and written 0600."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.conftest import CASES, render_case
from tests.security.bundles import LOOPBACK, published_ports, write

GATEWAYS = {"gateway", "deepfleet-gateway"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_nothing_but_the_gateway_is_published_beyond_loopback(name: str) -> None:
    bundle = render_case(CASES[name])
    exposed = [
        p for p in published_ports(bundle) if p.address not in LOOPBACK and p.where not in GATEWAYS
    ]
    assert not exposed, exposed


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_secrets_differ_per_render_and_only_owner_reads_them(
    name: str, tmp_path: Path
) -> None:
    first, second = render_case(CASES[name]), render_case(CASES[name])
    modes = write(first, tmp_path)
    secrets = [rel for rel in first.files if rel.startswith("secrets/") or rel == ".env"]
    if CASES[name].target != "ascend" or "serve.sh" in first.files:
        assert secrets, "nothing generated"
    for rel in secrets:
        assert modes[rel] == 0o600, rel
        if rel.startswith("secrets/"):
            assert first.files[rel] != second.files[rel], f"{rel} is the same in two renders"
    for rel, mode in modes.items():
        assert mode & 0o022 == 0, f"{rel} is writable by others"
