"""Finding 3, its second half: a model's `routing` was any string. A misspelt policy
(`kv_awre`) passed the config, and every request for the model then raised in the gateway's
router after admission, the path that leaked admission slots. The config now refuses an
unknown policy by name, with the list of known ones, before anything starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deepfleet.config import FleetConfig


def test_a_misspelt_routing_policy_is_refused_by_the_config() -> None:
    with pytest.raises(ValidationError) as info:
        FleetConfig.model_validate({"models": [{"name": "m", "routing": "kv_awre"}]})
    message = str(info.value)
    assert "models.0.routing" in message and "unknown routing policy" in message
    assert "kv_aware" in message  # the known policies are listed
