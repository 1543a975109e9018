"""Open-WebUI as a companion service of the controller, connected to the gateway.

The UI runs from its own venv (open-webui pins its own transformers, so it cannot share
deepfleet's) and talks to the gateway like any other OpenAI client, with its own API key. Its
settings come from the environment on every start (ENABLE_PERSISTENT_CONFIG=false): the fleet
config owns the connection, so a new gateway port or key reaches the UI on its next start.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepfleet.config.schema import FleetConfig
from deepfleet.config.state import StateError
from deepfleet.config.ui import UiSpec
from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.controller import Service, keys_db_path, local_url
from deepfleet.fleet.files import log_file
from deepfleet.fleet.ports import port_in_use
from deepfleet.fleet.state import ReplicaStatus
from deepfleet.gateway.store.open import open_state
from deepfleet.net import is_loopback
from deepfleet.ui.credentials import LOCAL_KEY_FILE, ensure_credentials, secrets_dir

REPO_ROOT = Path(__file__).resolve().parents[3]
VENV_EXECUTABLE = Path(".venv-webui/bin/open-webui")
SETUP_SCRIPT = "scripts/setup-webui.sh"
SERVICE_ID = "open-webui"
DATA_DIR = "webui"


class UiSetupError(Exception):
    """The UI cannot start as configured; the message says what to do."""


def find_executable(
    spec: UiSpec, root: Path = REPO_ROOT, which: Callable[[str], str | None] = shutil.which
) -> str:
    """`ui.executable`, else the checkout's .venv-webui, else `open-webui` on PATH."""
    if spec.executable is not None:
        given = str(spec.executable.expanduser())
        found = which(given) if os.sep not in given else given
        if found and os.access(found, os.X_OK) and Path(found).is_file():
            return found
        raise UiSetupError(
            f"ui.executable: {given!r} is not an executable file; run {SETUP_SCRIPT} "
            "(it makes .venv-webui) or fix the path"
        )
    venv = root / VENV_EXECUTABLE
    if os.access(venv, os.X_OK):
        return str(venv)
    on_path = which("open-webui")
    if on_path:
        return on_path
    raise UiSetupError(
        f"Open-WebUI is not installed: run {SETUP_SCRIPT} in the deepfleet checkout (it makes "
        f".venv-webui, about 3 minutes and 2.9 GB), put `open-webui` on PATH, or set "
        "ui.executable"
    )


def default_model(cfg: FleetConfig) -> str:
    names = [m.name for m in cfg.models]
    model = cfg.ui.default_model or names[0]
    if model not in names:
        raise UiSetupError(
            f"ui.default_model: {model!r} is not a model of this fleet; use one of "
            f"{', '.join(names)}"
        )
    return model


def native_tool_calls(cfg: FleetConfig) -> bool:
    """Whether every model's engine parses tool calls (vLLM refuses `tools` otherwise)."""
    return all(m.engine_args.get("enable_auto_tool_choice") for m in cfg.models)


def model_params(cfg: FleetConfig) -> dict[str, Any]:
    """Open-WebUI's default parameters for every chat: `ui.model_params` (or greedy for the
    bundled demo model), and no native tool calls unless every engine parses them."""
    params = cfg.ui.model_params
    if params is None:
        params = {"temperature": 0} if all(m.is_bundled for m in cfg.models) else {}
    if not native_tool_calls(cfg):
        # In its default (native) mode Open-WebUI sends its built-in tools with every chat,
        # which vLLM refuses without --enable-auto-tool-choice; legacy mode sends no `tools`.
        params = {"function_calling": "legacy", **params}
    return params


def webui_settings(cfg: FleetConfig, gateway_url: str) -> dict[str, str]:
    """Open-WebUI's environment apart from its secrets (OPENAI_API_KEY, WEBUI_SECRET_KEY) and
    its data folder (DATA_DIR): the gateway as its only connection, no network beyond it, login
    unless single-user. The compose and Kubernetes renderers use it too, with their own
    in-cluster gateway URL. `ui.env` comes last and wins."""
    spec = cfg.ui
    env = {
        "OPENAI_API_BASE_URL": f"{gateway_url.rstrip('/')}/v1",
        "ENABLE_OPENAI_API": "true",
        "ENABLE_OLLAMA_API": "false",
        "OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1",
        "RAG_EMBEDDING_ENGINE": "openai",
        "ENABLE_PERSISTENT_CONFIG": "false",
        "WEBUI_AUTH": "false" if spec.single_user else "true",
        "ANONYMIZED_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
        "DEFAULT_MODELS": default_model(cfg),
        # Each is one more full request (a whole reasoning pass on R1) after every answer,
        # which on a small fleet keeps people's next question waiting.
        "ENABLE_FOLLOW_UP_GENERATION": "false",
        "ENABLE_TAGS_GENERATION": "false",
    }
    params = model_params(cfg)
    if params:
        env["DEFAULT_MODEL_PARAMS"] = json.dumps(params, separators=(",", ":"))
    return {**env, **spec.env}


def check_login(spec: UiSpec, env: dict[str, str]) -> None:
    """Login off (WEBUI_AUTH false) only on a loopback host, checked on the merged
    environment: `ui.env` must not turn off what `single_user` may not."""
    auth = env.get("WEBUI_AUTH", "true").strip().lower()
    if auth not in ("true", "1", "yes", "on") and not is_loopback(spec.host):
        raise UiSetupError(
            f"ui.env: WEBUI_AUTH={env['WEBUI_AUTH']!r} turns login off, so it needs a loopback "
            f"`ui.host` (got {spec.host!r}); remove WEBUI_AUTH from ui.env or use 127.0.0.1"
        )


def ui_url(spec: UiSpec) -> str:
    return local_url(spec.host, spec.port)


def ui_service(cfg: FleetConfig, state_dir: Path, gateway_url: str) -> Service:
    """The Service the controller supervises for Open-WebUI. Creates the UI's API key (and the
    local one, see credentials.py) on first use; raises UiSetupError when it cannot start."""
    spec = cfg.ui
    settings = webui_settings(cfg, gateway_url)
    exe = find_executable(spec)
    if port_in_use(spec.host, spec.port):
        raise UiSetupError(
            f"ui.port: {spec.host}:{spec.port} is already in use (another Open-WebUI?); "
            "stop it or choose another ui.port"
        )
    try:
        state = open_state(cfg.gateway.state, keys_db_path(cfg, state_dir))
    except StateError as exc:
        raise UiSetupError(f"gateway.state: {exc}") from None
    try:
        creds = ensure_credentials(state.keys, state_dir)
    finally:
        state.close()
    data = (spec.data_dir.expanduser() if spec.data_dir else state_dir / DATA_DIR).resolve()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {
        "DATA_DIR": str(data),
        "OPENAI_API_KEY": creds.api_key,
        "WEBUI_SECRET_KEY": creds.session_secret,
    }
    if is_loopback(spec.host):
        env["CORS_ALLOW_ORIGIN"] = f"http://127.0.0.1:{spec.port};http://localhost:{spec.port}"
    env.update(settings)
    check_login(spec, env)
    url = ui_url(spec)
    status = ReplicaStatus(
        replica_id=SERVICE_ID,
        model="*",
        engine=SERVICE_ID,
        url=url,
        log=str(log_file(state_dir, SERVICE_ID)),
    )
    argv = [exe, "serve", "--host", spec.host, "--port", str(spec.port)]
    # cwd: Open-WebUI writes stray files (e.g. a secret key) into its working directory.
    return Service(status, LaunchSpec(argv=argv, env=env, cwd=data), url + "/health")


def ui_services(cfg: FleetConfig, state_dir: Path) -> list[Service]:
    """What `deepfleet up` passes to the controller: Open-WebUI when `ui.enabled`."""
    if not cfg.ui.enabled:
        return []
    return [ui_service(cfg, state_dir, local_url(cfg.gateway.host, cfg.gateway.port))]


def ui_notes(cfg: FleetConfig, state_dir: Path) -> list[str]:
    """Lines for a person starting the fleet: where the UI is, how to log in, and the local
    API key once the UI's key has turned keys on."""
    if not cfg.ui.enabled:
        return []
    login = (
        "single user, no login" if cfg.ui.single_user else "log in; the first account is the admin"
    )
    lines = [f"Open-WebUI: {ui_url(cfg.ui)} ({login})"]
    local = secrets_dir(state_dir) / LOCAL_KEY_FILE
    if local.is_file():
        lines.append(
            "the gateway asks for API keys (Open-WebUI has its own); for curl and scripts here: "
            f"export DEEPFLEET_API_KEY=$(cat {local})"
        )
    return lines
