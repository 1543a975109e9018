"""fleet.yaml's `replicas: {min, max}` and `autoscale:`: accepted forms and errors naming the
field."""

from __future__ import annotations

from typing import Any

import pytest

from deepfleet.config.autoscale import ReplicaRange
from deepfleet.config.load import ConfigError, validate
from deepfleet.fleet.changes import model_change


def model(**kw: Any) -> dict[str, Any]:
    return {"models": [{"name": "m", **kw}]}


@pytest.mark.parametrize(
    ("replicas", "fixed"),
    [(2, 2), ("auto", None), ({"min": 0, "max": 2}, 1), ({"min": 3, "max": 5}, 3)],
)
def test_forms(replicas: Any, fixed: int | None) -> None:
    spec = validate(model(replicas=replicas)).models[0]
    assert spec.fixed_replicas == fixed


def test_autoscale_targets() -> None:
    spec = validate(
        model(replicas={"min": 0, "max": 2}, autoscale={"ttft_p90_ms": 500, "idle_timeout_s": 60})
    ).models[0]
    assert isinstance(spec.replicas, ReplicaRange)
    assert spec.autoscale is not None and spec.autoscale.ttft_p90_ms == 500


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"replicas": {"min": 3, "max": 1}},
            "models[0].replicas: {min, max}: min 3 is above max 1",
        ),
        ({"replicas": {"min": 0}}, "models[0].replicas: {min, max}: max: Field required"),
        ({"replicas": {"min": -1, "max": 2}}, "models[0].replicas: {min, max}: min:"),
        ({"replicas": {"min": 0, "max": 2, "step": 1}}, "step: Extra inputs"),
        ({"replicas": 2, "autoscale": {}}, "models[0].autoscale: needs `replicas: {min, max}`"),
        (
            {"replicas": {"min": 0, "max": 1}, "autoscale": {"itl_p90_ms": 0}},
            "models[0].autoscale.itl_p90_ms: Input should be greater than 0",
        ),
        ({"replicas": 0}, "models[0].replicas: must be at least 1"),
    ],
)
def test_errors_name_the_field(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(model(**kw))
    assert message in str(err.value)


def test_apply_shows_a_range() -> None:
    old = validate(model(replicas=1)).models[0]
    new = validate(model(replicas={"min": 0, "max": 2})).models[0]
    change = model_change(old, new)
    assert (change.action, change.old_replicas, change.new_replicas) == ("scale", 1, "0..2")
