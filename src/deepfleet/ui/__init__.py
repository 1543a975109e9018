"""The chat UI for people: Open-WebUI started beside the gateway and connected to it."""

from deepfleet.ui.credentials import UiCredentials, ensure_credentials
from deepfleet.ui.webui import (
    UiSetupError,
    find_executable,
    ui_notes,
    ui_service,
    ui_services,
    ui_url,
    webui_settings,
)

__all__ = [
    "UiCredentials",
    "UiSetupError",
    "ensure_credentials",
    "find_executable",
    "ui_notes",
    "ui_service",
    "ui_services",
    "ui_url",
    "webui_settings",
]
