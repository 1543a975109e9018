"""The files the controller writes in a fleet's state dir, and how.

The state dir holds the metrics token (gateway.json), the keys database and the KV store's
password, so it and everything the controller writes in it are private to the user: folders
0700, files 0600 (the same as a umask of 077, without changing the umask the engines inherit).
Files other processes read while they change (fleet.json, gateway.json, kv_routing.json) are
replaced atomically, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
LOGS_DIR = "logs"
KV_PASSWORD_FILE = "kv_store_password"
KV_STORE_CONF = "kv_store.conf"
ENGINE_KEY_FILE = "engine_api_key"
METRICS_TOKEN_FILE = "metrics_token"


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (created, or its mode tightened)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def atomic_write(path: Path, text: str, mode: int = PRIVATE_FILE) -> None:
    """Replace `path` with `text`: a temp file in the same folder, fsynced, renamed over it,
    then the folder fsynced, so a crash or a full disk leaves the old file or the new one.
    On any error the temp file is removed and the error raised."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            data = text.encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class UnsafeLogPath(ValueError):
    """A log name that would put the file outside the state dir's logs/ folder."""


def log_file(state_dir: Path, name: str) -> Path:
    """logs/NAME.log in `state_dir`, created private (folders 0700, file 0600) before a process
    appends to it; refused (UnsafeLogPath) when it resolves outside logs/."""
    logs = private_dir(state_dir / LOGS_DIR).resolve()
    path = (logs / f"{name}.log").resolve()
    if not path.is_relative_to(logs) or path.parent == path or path == logs:
        raise UnsafeLogPath(f"log name {name!r} leaves {logs}")
    for folder in reversed(path.relative_to(logs).parents[:-1]):
        private_dir(logs / folder)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)
    return path


def kv_store_password(state_dir: Path) -> str:
    """The password of the fleet's own Redis store: read from the state dir's 0600
    kv_store_password, generated there on first use."""
    return _secret(state_dir, KV_PASSWORD_FILE)


def engine_api_key(state_dir: Path) -> str:
    """The key the fleet's engines require on their API (/v1/*) and only the gateway sends:
    read from the state dir's 0600 engine_api_key, generated there on first use, so nobody
    who reaches an engine's port can use it around the gateway's keys and limits."""
    return _secret(state_dir, ENGINE_KEY_FILE)


def metrics_token(state_dir: Path) -> str:
    """A generated metrics token for a gateway on a non-loopback address whose config sets
    none: the state dir's 0600 metrics_token, made on first use (Prometheus reads it there)."""
    return _secret(state_dir, METRICS_TOKEN_FILE)


def read_engine_key(state_dir: Path) -> str | None:
    """The engines' key for the gateway to send, or None when the fleet has none."""
    with contextlib.suppress(FileNotFoundError):
        return (state_dir / ENGINE_KEY_FILE).read_text().strip() or None
    return None


def _secret(state_dir: Path, name: str) -> str:
    path = private_dir(state_dir) / name
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text().strip()
        if text:
            return text
    secret = secrets.token_hex(32)
    atomic_write(path, secret + "\n")
    return secret
