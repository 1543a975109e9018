from __future__ import annotations

from pathlib import Path

import pytest

from deepfleet.config import default_config
from deepfleet.observability.render import render_monitoring, settings_for


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The monitoring files for the default fleet, with a DCGM target and a metrics token."""
    out = tmp_path_factory.mktemp("monitoring")
    settings = settings_for(
        default_config(),
        dcgm_targets=("10.0.0.2:9400",),
        alertmanagers=("127.0.0.1:9093",),
        metrics_token="tok",
    )
    render_monitoring(settings, out)
    return out
