"""The UI's secrets, kept (mode 0600) in `<state dir>/secrets/` so restarts reuse them.

- `webui-api-key`: the gateway API key Open-WebUI sends. Created once in deepfleet's key store;
  a new one replaces it only when the store no longer accepts it (revoked, expired, or another
  keys.db).
- `webui-session-secret`: WEBUI_SECRET_KEY, which signs Open-WebUI's login tokens; kept so that
  people stay logged in across restarts.
- `local-api-key`: written only when the UI's key is the store's first one. The gateway asks for
  a key on every /v1 route as soon as any key exists, so creating the UI's key turns auth on
  for every other client too; this second key is what the CLI, curl and scripts on this machine
  use from then on (`export DEEPFLEET_API_KEY=$(cat <state dir>/secrets/local-api-key)`).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from deepfleet.gateway.keys import hash_secret
from deepfleet.gateway.store.base import KeyRecords

SECRETS_DIR = "secrets"
UI_KEY_FILE = "webui-api-key"
SESSION_SECRET_FILE = "webui-session-secret"
LOCAL_KEY_FILE = "local-api-key"
UI_KEY_NAME = "open-webui"
LOCAL_KEY_NAME = "local"


@dataclass(frozen=True)
class UiCredentials:
    api_key: str  # what Open-WebUI sends to the gateway
    session_secret: str  # WEBUI_SECRET_KEY
    local_key_file: Path | None  # written by this call: API keys were off until now


def secrets_dir(state_dir: Path) -> Path:
    return state_dir / SECRETS_DIR


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (a reader never sees half a key)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)


def read_secret(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def _live(store: KeyRecords, secret: str, now: float) -> bool:
    key = store.by_hash().get(hash_secret(secret))
    return key is not None and key.usable(now) is None


def ensure_credentials(
    store: KeyRecords, state_dir: Path, clock: float | None = None
) -> UiCredentials:
    """The UI's API key (in the gateway's key store, `store`) and session secret: the kept
    ones when still valid, else new ones."""
    now = time.time() if clock is None else clock
    folder = secrets_dir(state_dir)
    local_file: Path | None = None
    api_key = read_secret(folder / UI_KEY_FILE)
    if api_key is None or not _live(store, api_key, now):
        auth_was_off = not store.all()
        _, api_key = store.create(UI_KEY_NAME)
        write_secret(folder / UI_KEY_FILE, api_key)
        if auth_was_off:
            _, local = store.create(LOCAL_KEY_NAME)
            local_file = folder / LOCAL_KEY_FILE
            write_secret(local_file, local)
    session = read_secret(folder / SESSION_SECRET_FILE)
    if session is None:
        session = secrets.token_urlsafe(48)
        write_secret(folder / SESSION_SECRET_FILE, session)
    return UiCredentials(api_key, session, local_file)
