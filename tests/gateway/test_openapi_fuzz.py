"""schemathesis against the real gateway process (fake engines behind it): no 5xx, and every
response matches /openapi.json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from deepfleet.gateway.openapi import openapi_spec
from tests.helpers.processes import GatewayRig, gateway_with_fake_engines

schema = schemathesis.openapi.from_dict(openapi_spec())
EXAMPLES = 60


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayRig]:
    # No context length: the schema cannot know a model's, so any max_tokens is schema-valid.
    with gateway_with_fake_engines(
        tmp_path_factory.mktemp("fuzz"), "tiny", max_model_len=None
    ) as rig:
        yield rig


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_gateway_conforms(case: schemathesis.Case, live: GatewayRig) -> None:
    response = case.call_and_validate(base_url=live.url)
    assert response.status_code < 500


def test_spec_served_by_gateway(live: GatewayRig) -> None:
    import httpx

    assert httpx.get(live.url + "/openapi.json").json() == openapi_spec()
    assert Path(live.state_dir / "gateway.log").exists()
