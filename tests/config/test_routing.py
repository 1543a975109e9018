"""fleet.yaml's routing fields are checked against the routing registries: a typo is refused
by `deepfleet config check` with the field's path and the known names, never at request time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deepfleet.cli.main import app
from deepfleet.config import ConfigError, validate
from deepfleet.routing import known_policies
from deepfleet.routing.scorers import known_scorers

POLICIES = ", ".join(known_policies())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"models": [{"name": "m", "routing": "nope"}]},
            f"models[0].routing: unknown routing policy; known: {POLICIES} (got 'nope')",
        ),
        (
            {"models": [{"name": "a"}, {"name": "b", "routing": "kv-aware"}]},
            f"models[1].routing: unknown routing policy; known: {POLICIES} (got 'kv-aware')",
        ),
        (
            {"models": [{"name": "m"}], "kv_cache": {"routing": {"scorers": {"prefx": 1}}}},
            "kv_cache.routing.scorers: unknown scorer(s) prefx; known: "
            f"{', '.join(known_scorers())}",
        ),
        (
            {"models": [{"name": "m"}], "kv_cache": {"routing": {"scorers": {"load": -1}}}},
            "kv_cache.routing.scorers: scorer weights must be >= 0: load",
        ),
        (
            {"models": [{"name": "m"}], "kv_cache": {"routing": {"prefix_weight": 3}}},
            "kv_cache.routing.prefix_weight: unknown key (remove it or check its spelling)",
        ),
    ],
)
def test_routing_fields_are_refused_by_name(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(data)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


@pytest.mark.parametrize("name", known_policies())
def test_every_known_policy_is_accepted(name: str) -> None:
    assert validate({"models": [{"name": "m", "routing": name}]}).models[0].routing == name


def test_config_check_names_the_field_and_the_policies(tmp_path: Path) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text("models:\n  - name: m\n    routing: nope\n")
    result = CliRunner().invoke(app, ["config", "check", "-f", str(f)])
    assert result.exit_code == 2
    assert f"{f}: models[0].routing: unknown routing policy; known: {POLICIES}" in (
        result.output.replace("\n", "")
    )
