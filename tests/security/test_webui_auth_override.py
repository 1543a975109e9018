"""Finding 14: on a non-loopback host, `ui.env` could set WEBUI_AUTH=false after the loopback
check (which only looked at `single_user`), serving Open-WebUI without login to the network.
The check runs on the merged environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deepfleet.config import FleetConfig
from deepfleet.ui import webui
from deepfleet.ui.webui import UiSetupError, ui_service


def test_ui_env_cannot_turn_login_off_on_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = tmp_path / "open-webui"
    exe.write_text("#!/bin/sh\n")
    os.chmod(exe, 0o755)
    monkeypatch.setattr(webui, "port_in_use", lambda host, port: False)
    cfg = FleetConfig.model_validate(
        {
            "models": [{"name": "m"}],
            "ui": {"enabled": True, "host": "0.0.0.0", "executable": str(exe),
                   "env": {"WEBUI_AUTH": "False"}},
        }
    )  # fmt: skip
    with pytest.raises(UiSetupError, match=r"ui\.env: WEBUI_AUTH"):
        ui_service(cfg, tmp_path, "http://127.0.0.1:8000")
    # On loopback a single user may turn it off.
    loopback = cfg.model_copy(update={"ui": cfg.ui.model_copy(update={"host": "127.0.0.1"})})
    service = ui_service(loopback, tmp_path, "http://127.0.0.1:8000")
    assert service.spec.env["WEBUI_AUTH"] == "False"
