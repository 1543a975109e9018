"""`deepfleet up --ui` as a person uses it: in a browser, create the admin account, pick the
bundled model, ask, watch the answer stream in; after `deepfleet down` and `up --ui` again the
chat is still there (and the person still logged in)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from deepfleet.fleet.ports import free_port
from deepfleet.fleet.readiness import gateway_view
from tests.e2e.conftest import DEEPFLEET, MODEL, START_TIMEOUT_S, cli, status_json
from tests.ui.browser import (
    DOCS,
    PlaywrightTimeout,
    ask,
    chromium,
    chromium_path,
    create_admin,
    open_sidebar,
    open_ui,
    webui_executable,
)

pytestmark = pytest.mark.slow

Status = dict[str, Any]


def _ready(ids: tuple[str, ...], routing: bool = False) -> Callable[[Status], bool]:
    """`ids` ready in the status; with `routing`, the gateway also routes every model (its
    /ready, as `deepfleet up` means serving)."""

    def check(st: Status) -> bool:
        procs = [st.get("gateway") or {}, *st.get("replicas", []), *st.get("services", [])]
        states = {p.get("id"): p.get("state") for p in procs}
        ready = all(states.get(i) == "ready" for i in ids)
        return ready and (not routing or gateway_view(str(st["gateway_url"])).ready)

    return check


@contextmanager
def up_ui(config: Path, state: Path, ready: Callable[[Status], bool]) -> Iterator[set[int]]:
    """`deepfleet up --ui` in the foreground until `ready(status)`; yields the pids it started.
    The caller stops it with `deepfleet down`; anything left is killed at the end."""
    log = state / "up.log"
    state.mkdir(exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [*DEEPFLEET, "up", "--ui", "-f", str(config), "--state-dir", str(state)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    tree: set[int] = {proc.pid}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready(status_json(state)):
            assert proc.poll() is None, f"up exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        tree |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        yield tree
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        proc.wait(10)


def _alive(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(" ".join(p.cmdline())[:80])
    return out


def _down(state: Path, tree: set[int]) -> None:
    r = cli("down", "--state-dir", str(state), timeout=120)
    assert r.returncode == 0 and "fleet stopped" in r.stdout, r.stdout + r.stderr
    time.sleep(0.5)
    assert _alive(tree) == []


def test_chat_in_browser_streams_and_survives_restart(tmp_path: Path) -> None:
    webui_executable()
    chromium_path()
    ui_port = free_port()
    config = tmp_path / "fleet.yaml"
    config.write_text(
        f"models:\n  - name: {MODEL}\ngateway: {{port: {free_port()}}}\nui: {{port: {ui_port}}}\n"
    )
    state = tmp_path / "state"
    ui_url = f"http://127.0.0.1:{ui_port}"
    everything = _ready(("gateway", f"{MODEL}-0", "open-webui"), routing=True)
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        with up_ui(config, state, everything) as tree:
            st = status_json(state)
            assert [(s["id"], s["endpoint"]) for s in st["services"]] == [("open-webui", ui_url)]
            table = subprocess.run(
                [*DEEPFLEET, "status", "--state-dir", str(state)],
                capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
            )  # fmt: skip
            row = [line for line in table.stdout.splitlines() if "open-webui" in line]
            assert row and "ready" in row[0] and ui_url in row[0], table.stdout
            secrets = state / "secrets"
            modes = {f.name: f.stat().st_mode & 0o777 for f in secrets.iterdir()}
            assert modes == dict.fromkeys(
                ("webui-api-key", "webui-session-secret", "local-api-key"), 0o600
            )

            open_ui(page, ui_url)
            create_admin(page, "Ada Admin", "ada@example.com", "correct horse battery staple")
            open_sidebar(page)
            answer = ask(page, MODEL, "What is the capital of France?", "Paris")
            chat_path = page.url.removeprefix(ui_url)
            assert chat_path.startswith("/c/")
            assert answer.updates >= 2, "the answer arrived in one piece, not streamed"
            with contextlib.suppress(PlaywrightTimeout):  # the sidebar's title, for the picture
                page.locator(f'a[href="{chat_path}"]').get_by_text("capital").wait_for(
                    timeout=15_000
                )
            page.screenshot(path=str(DOCS / "ui-chat.png"))
            print(
                f"\nUI answer: {answer.text!r}; first text {answer.first_text_s:.2f}s after Enter"
            )
            _down(state, tree)

        # Again: only the UI needs to be up to show the kept chat.
        with up_ui(config, state, _ready(("gateway", "open-webui"))) as tree:
            open_ui(page, ui_url)  # still logged in: the session secret was kept
            open_sidebar(page)
            page.locator(f'a[href="{chat_path}"]').first.click()
            page.get_by_text("What is the capital of France?").last.wait_for(timeout=30_000)
            reply = page.locator("#response-content-container").last
            assert "Paris" in reply.inner_text()
            _down(state, tree)
