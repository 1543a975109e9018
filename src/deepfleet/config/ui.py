"""The `ui:` section of fleet.yaml: Open-WebUI started beside the gateway and connected to it.

ui:
  enabled: true            # or `deepfleet up --ui`
  port: 3000
  single_user: false       # true: no login (only on a loopback host)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from deepfleet.config.base import Strict
from deepfleet.net import is_loopback


class UiSpec(Strict):
    enabled: bool = Field(
        False, description="Start Open-WebUI with `deepfleet up` (the same as `up --ui`)."
    )
    host: str = Field("127.0.0.1", description="Address Open-WebUI binds; loopback unless set.")
    port: int = Field(3000, ge=1, le=65535, description="Open-WebUI's port.")
    single_user: bool = Field(
        False,
        description="No login (WEBUI_AUTH=false): whoever opens the UI is its admin. Only "
        "allowed with a loopback `host`; otherwise the first account created is the admin.",
    )
    executable: Path | None = Field(
        None,
        description="The `open-webui` command; None: .venv-webui/bin/open-webui in the "
        "deepfleet checkout (made by scripts/setup-webui.sh), else `open-webui` on PATH.",
    )
    data_dir: Path | None = Field(
        None,
        description="Open-WebUI's data (accounts, chats, uploads); None: webui/ in the state "
        "dir, so chats survive restarts.",
    )
    default_model: str | None = Field(
        None, description="Model preselected for new chats; None: the fleet's first model."
    )
    model_params: dict[str, Any] | None = Field(
        None,
        description="Default generation parameters of every chat (Open-WebUI's "
        "DEFAULT_MODEL_PARAMS, e.g. {temperature: 0.6} as DeepSeek advises for R1); people can "
        "change them per chat. None: {temperature: 0} when the fleet serves only the bundled "
        "demo model (a 135M model answers sensibly only greedily, as in `deepfleet chat`), "
        "else the engines' defaults.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Open-WebUI environment variables; they override deepfleet's "
        "(e.g. ENABLE_SIGNUP: 'false' once every account exists).",
    )

    @model_validator(mode="after")
    def _login_off_only_on_loopback(self) -> UiSpec:
        if self.single_user and not is_loopback(self.host):
            raise ValueError(
                f"`single_user: true` turns login off, so it needs a loopback `host` "
                f"(got {self.host!r}); use 127.0.0.1 or set `single_user: false`"
            )
        return self
