"""The Open-WebUI service: its command, environment, key and data folder, without starting it."""

from __future__ import annotations

import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from deepfleet.config import ConfigError, validate
from deepfleet.config.schema import FleetConfig
from deepfleet.config.ui import UiSpec
from deepfleet.fleet.ports import free_port
from deepfleet.gateway.keys import KeyStore, hash_secret
from deepfleet.ui import (
    UiSetupError,
    find_executable,
    ui_notes,
    ui_service,
    ui_services,
    webui_settings,
)
from deepfleet.ui.credentials import LOCAL_KEY_FILE, UI_KEY_FILE, secrets_dir

GATEWAY = "http://127.0.0.1:8000"


def config(ui: dict[str, Any] | None = None, **model: Any) -> FleetConfig:
    return validate({"models": [{"name": "m", **model}], "ui": ui or {}})


@pytest.fixture
def webui(tmp_path: Path) -> Path:
    """A stand-in `open-webui` executable (never run here)."""
    exe = tmp_path / "bin" / "open-webui"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


def service_cfg(webui: Path, **ui: Any) -> FleetConfig:
    return config({"enabled": True, "executable": str(webui), "port": free_port(), **ui})


@pytest.mark.parametrize(
    ("ui", "model", "expect"),
    [
        ({}, {}, {"WEBUI_AUTH": "true", "DEFAULT_MODELS": "m"}),
        ({"single_user": True}, {}, {"WEBUI_AUTH": "false"}),
        # The bundled 135M demo model answers sensibly only greedily; tools are off without a
        # tool-call parser in the engine.
        (
            {},
            {},
            {"DEFAULT_MODEL_PARAMS": '{"function_calling":"legacy","temperature":0}'},
        ),
        (
            {"model_params": {"temperature": 0.6}},
            {"source": "deepseek-ai/DeepSeek-R1"},
            {"DEFAULT_MODEL_PARAMS": '{"function_calling":"legacy","temperature":0.6}'},
        ),
        (
            {},
            {"source": "deepseek-ai/DeepSeek-R1", "engine_args": {"enable_auto_tool_choice": True}},
            {"DEFAULT_MODEL_PARAMS": None},
        ),
        (
            {"env": {"ENABLE_SIGNUP": "false", "OFFLINE_MODE": "false"}},
            {},
            {"OFFLINE_MODE": "false", "ENABLE_SIGNUP": "false"},
        ),
    ],
)
def test_settings(ui: dict[str, Any], model: dict[str, Any], expect: dict[str, str | None]) -> None:
    env = webui_settings(config(ui, **model), GATEWAY)
    assert env["OPENAI_API_BASE_URL"] == f"{GATEWAY}/v1"
    assert env["ENABLE_OLLAMA_API"] == "false"
    assert env["ENABLE_PERSISTENT_CONFIG"] == "false"
    assert env["RAG_EMBEDDING_ENGINE"] == "openai"
    assert env["HF_HUB_OFFLINE"] == "1"
    for key, value in expect.items():
        assert env.get(key) == value, key


def test_single_user_needs_loopback() -> None:
    with pytest.raises(ConfigError) as err:
        config({"single_user": True, "host": "0.0.0.0"})
    assert err.value.problems[0].startswith("ui: `single_user: true` turns login off")


def test_default_model_must_be_served() -> None:
    with pytest.raises(UiSetupError, match=r"ui.default_model: 'other' is not a model"):
        webui_settings(config({"default_model": "other"}), GATEWAY)


def test_executable_order(tmp_path: Path, webui: Path) -> None:
    root = tmp_path / "repo"
    on_path = {"open-webui": "/usr/local/bin/open-webui"}
    # Nothing installed: the error names the setup script.
    with pytest.raises(UiSetupError, match=r"scripts/setup-webui\.sh"):
        find_executable(UiSpec(), root, which=lambda name: None)
    assert find_executable(UiSpec(), root, which=on_path.get) == on_path["open-webui"]
    venv = root / ".venv-webui/bin/open-webui"
    venv.parent.mkdir(parents=True)
    venv.write_text("")
    venv.chmod(0o755)
    assert find_executable(UiSpec(), root, which=on_path.get) == str(venv)
    assert find_executable(UiSpec(executable=webui), root) == str(webui)
    with pytest.raises(UiSetupError, match=r"ui.executable: .*run scripts/setup-webui.sh"):
        find_executable(UiSpec(executable=tmp_path / "missing"), root)


def test_service(tmp_path: Path, webui: Path) -> None:
    cfg = service_cfg(webui)
    svc = ui_service(cfg, tmp_path, GATEWAY)
    env = svc.spec.env
    port = cfg.ui.port
    assert svc.spec.argv == [str(webui), "serve", "--host", "127.0.0.1", "--port", str(port)]
    assert svc.health_url == f"http://127.0.0.1:{port}/health"
    assert (svc.status.replica_id, svc.status.engine) == ("open-webui", "open-webui")
    assert svc.status.log == str(tmp_path / "logs" / "open-webui.log")
    data = tmp_path / "webui"
    assert env["DATA_DIR"] == str(data) and svc.spec.cwd == data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert env["CORS_ALLOW_ORIGIN"] == f"http://127.0.0.1:{port};http://localhost:{port}"
    assert len(env["WEBUI_SECRET_KEY"]) >= 48
    # The key is in the fleet's key store, usable, and not an admin key.
    store = KeyStore(tmp_path / "keys.db")
    key = store.by_hash()[hash_secret(env["OPENAI_API_KEY"])]
    assert (key.name, key.admin, key.usable(0)) == ("open-webui", False, None)
    # A restart reuses both secrets; nothing new is created.
    again = ui_service(cfg, tmp_path, GATEWAY).spec.env
    assert again["OPENAI_API_KEY"] == env["OPENAI_API_KEY"]
    assert again["WEBUI_SECRET_KEY"] == env["WEBUI_SECRET_KEY"]
    assert len(store.all()) == 2  # the UI's and the local one


def test_key_turning_auth_on_leaves_a_local_key(tmp_path: Path, webui: Path) -> None:
    cfg = service_cfg(webui)
    ui_service(cfg, tmp_path, GATEWAY)
    folder = secrets_dir(tmp_path)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (UI_KEY_FILE, LOCAL_KEY_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    local = (folder / LOCAL_KEY_FILE).read_text().strip()
    store = KeyStore(tmp_path / "keys.db")
    assert store.by_hash()[hash_secret(local)].name == "local"
    notes = ui_notes(cfg, tmp_path)
    assert notes[0].startswith(f"Open-WebUI: http://127.0.0.1:{cfg.ui.port} (log in")
    assert f"export DEEPFLEET_API_KEY=$(cat {folder / LOCAL_KEY_FILE})" in notes[1]


def test_existing_keys_mean_no_local_key(tmp_path: Path, webui: Path) -> None:
    KeyStore(tmp_path / "keys.db").create("ops")
    ui_service(service_cfg(webui), tmp_path, GATEWAY)
    assert not (secrets_dir(tmp_path) / LOCAL_KEY_FILE).exists()
    names = sorted(k.name for k in KeyStore(tmp_path / "keys.db").all())
    assert names == ["open-webui", "ops"]


def test_revoked_key_is_replaced(tmp_path: Path, webui: Path) -> None:
    cfg = service_cfg(webui)
    first = ui_service(cfg, tmp_path, GATEWAY).spec.env["OPENAI_API_KEY"]
    KeyStore(tmp_path / "keys.db").revoke("open-webui")
    second = ui_service(cfg, tmp_path, GATEWAY).spec.env["OPENAI_API_KEY"]
    assert second != first
    assert (secrets_dir(tmp_path) / UI_KEY_FILE).read_text().strip() == second


def test_port_in_use_is_refused(tmp_path: Path, webui: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = service_cfg(webui, port=taken.getsockname()[1])
        with pytest.raises(UiSetupError, match=r"ui\.port: .* already in use"):
            ui_service(cfg, tmp_path, GATEWAY)


def test_data_dir_and_single_user(tmp_path: Path, webui: Path) -> None:
    data = tmp_path / "chats"
    cfg = service_cfg(webui, data_dir=str(data), single_user=True)
    env = ui_service(cfg, tmp_path / "state", GATEWAY).spec.env
    assert env["DATA_DIR"] == str(data) and env["WEBUI_AUTH"] == "false"
    assert "single user, no login" in ui_notes(cfg, tmp_path / "state")[0]


def test_disabled_ui_starts_nothing(tmp_path: Path) -> None:
    assert ui_services(config(), tmp_path) == []
    assert ui_notes(config(), tmp_path) == []
    assert not (tmp_path / "keys.db").exists()
