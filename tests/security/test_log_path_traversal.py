"""Finding 22: model names could hold `..` and slashes, and a replica's log file is
logs/<replica id>.log (the id starts with the model name), so a name like a/../../x wrote
outside logs/. Names are validated (the error names the field), and the log path refuses
anything resolving outside logs/ even when a name got past the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfleet.config import FleetConfig
from deepfleet.config.load import ConfigError, validate
from deepfleet.config.schema import ModelSpec
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.controller import Controller


@pytest.mark.parametrize("name", ["a/../../etc/cron.d/x", "../x", "/abs", "a//b", "a/", "a/./b"])
def test_a_model_name_cannot_climb_out_of_logs(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\[1\]\.name"):
        validate({"models": [{"name": "ok"}, {"name": name}]})
    for good in ("deepseek-ai/DeepSeek-R1", "m", "qwen2.5:7b"):
        validate({"models": [{"name": good}]})
    # A name that got past the config (built in code) still cannot place a log outside logs/.
    cfg = FleetConfig.model_validate({"models": [{"name": "m"}]})
    evil = ModelSpec.model_construct(**{**cfg.models[0].__dict__, "name": "a/../../escape"})
    plan = ReplicaPlan(evil, "a/../../escape-0", "/models/m", "127.0.0.1", 9000)
    with pytest.raises(ValueError, match="leaves"):
        Controller(cfg, tmp_path / "state", [plan])
    assert not (tmp_path / "escape-0.log").exists()
