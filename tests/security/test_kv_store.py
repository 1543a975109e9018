"""Finding 13 (bundle side): the fleet's KV store in the bundles listened on 0.0.0.0 with no
password, so anyone reaching it could read or poison cached KV blocks.

Redis must want a password generated per render (compose: the 0600 .env; several hosts: a
0600 file serve.sh reads) that engines pass in redis://:PASSWORD@host, and listen on the
private side only (one host: the compose network, no published port; several hosts: the
head's configured address). The test starts the rendered Redis command and talks to it
without and with the password. The LMCache server has no authentication: it must not be
published nor listen on every interface."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import CASES, compose_command, render, run
from tests.security.bundles import write

REDIS = {"offload": "lmcache", "cpu_gib": 64, "remote": {"kind": "redis", "max_gib": 1}}
LMCACHE = {"offload": "lmcache", "cpu_gib": 64, "remote": {"kind": "lmcache", "port": 65001}}


def _with_kv(case: str, kv: dict[str, Any]) -> dict[str, Any]:
    data = CASES[case].data()
    data["kv_cache"] = kv
    return data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ask(port: int, *commands: str) -> list[str]:
    """Send inline Redis commands; the first line of each answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        answers = []
        reader = conn.makefile("rb")
        for command in commands:
            conn.sendall(command.encode() + b"\r\n")
            answers.append(reader.readline().decode().strip())
        return answers


def _start_redis(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """The rendered redis-server command, moved to a free loopback port for the test."""
    port = _free_port()
    argv = list(argv)
    argv[argv.index("--bind") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", *argv[1:]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    pytest.fail("redis-server did not start")


def _check_lmcache() -> None:
    one = yaml.safe_load(render("compose", _with_kv("h200-1x8-compose", LMCACHE)).files[
        "compose.yaml"])["services"]["kv-store"]  # fmt: skip
    assert not one.get("ports"), "the LMCache server (no auth) is published"
    serve = render("compose", _with_kv("r1-8x8-compose", LMCACHE)).files["serve.sh"]
    line = next(x for x in serve.replace("\\\n", " ").splitlines() if "lmcache.v1.server" in x)
    inner = shlex.split(shlex.split(line)[-1])
    assert inner[inner.index("lmcache.v1.server") + 1] == "10.0.0.1"  # the head's address


def test_kv_store_reached_without_password_is_refused(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    # one host: compose, as compose resolves it with the bundle's .env
    modes = write(render("compose", _with_kv("h200-1x8-compose", REDIS)), tmp_path)
    done = run([*compose_command(), "--project-directory", str(tmp_path),
                "-f", str(tmp_path / "compose.yaml"), "config", "--format", "json"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    store = services["kv-store"]
    assert not store.get("ports"), "the store is published"
    url = urlsplit(services["engine-r1-distill-7b-0"]["environment"]["LMCACHE_REMOTE_URL"])
    server, port = _start_redis(store["entrypoint"])
    try:
        answer = _ask(port, "PING")[0]
        assert answer.startswith("-NOAUTH"), f"the store answered {answer} without a password"
        assert url.password, "engines reach the store without a password"
        assert _ask(port, f"AUTH {url.password}", "PING") == ["+OK", "+PONG"]
    finally:
        server.kill()
        server.wait()
    assert modes[".env"] == 0o600
    # several hosts: serve.sh on the head
    bundle = render("compose", _with_kv("r1-8x8-compose", REDIS))
    modes = write(bundle, tmp_path / "multi")
    serve = bundle.files["serve.sh"].replace("\\\n", " ")
    line = next(x for x in serve.splitlines() if "redis-server" in x and "docker run" in x)
    argv = shlex.split(line)
    argv = argv[argv.index("redis-server") :]
    assert argv[argv.index("--bind") + 1] == "10.0.0.1", "not bound to the private address"
    assert argv[argv.index("--requirepass") + 1] == "${KV_STORE_PASSWORD}"
    secret = next(rel for rel in bundle.files if "kv_store" in rel and rel.startswith("secrets/"))
    assert modes[secret] == 0o600 and secret in serve
    assert '"LMCACHE_REMOTE_URL=redis://:${KV_STORE_PASSWORD}@10.0.0.1:' in serve
    _check_lmcache()
