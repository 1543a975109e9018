"""The `kv_cache:` section: errors that name the fix, and the routing knobs it hands on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from deepfleet.config.schema import FleetConfig
from deepfleet.routing.registry import policy_params


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"offload": "cpu"}, "needs `cpu_gib`"),
        ({"offload": "none", "disk": {"path": "/x", "gib": 1}}, "need `offload: lmcache`"),
        ({"routing": {"spill_rel": 0.5}}, "greater than or equal to 1"),
        ({"offload": "gpu"}, "offload"),
    ],
)
def test_config_errors_name_the_fix(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FleetConfig.model_validate({"models": [{"name": "m"}], "kv_cache": section})


def test_routing_section_feeds_the_policies() -> None:
    cfg = FleetConfig.model_validate(
        {
            "models": [{"name": "m", "routing": "kv_aware"}],
            "kv_cache": {"routing": {"spill_abs": 3}},
        }
    )
    params = policy_params("kv_aware", cfg.kv_cache.routing.model_dump())
    assert params["spill_abs"] == 3 and json.dumps(params)
