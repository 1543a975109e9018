"""Drive Open-WebUI in headless Chromium the way a person does, and time what they see.

Debian's chromium with Python playwright (its own browser download does not work here). Tests
that need them skip, naming the fix, when either is missing; so do tests that need the UI venv.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deepfleet.config.ui import UiSpec
from deepfleet.ui import UiSetupError, find_executable

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser tests skip, naming the fix
    PlaywrightTimeout = TimeoutError  # type: ignore[misc,assignment]

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
SETUP = "scripts/setup-test-deps.sh (apt-get install chromium; scripts/setup-webui.sh)"

# Records every distinct text of the newest answer with its time, from the moment the prompt is
# sent, so a test sees the stream arrive piece by piece (and when the first piece came).
WATCH_ANSWER = """() => {
  window.__answer = [];
  window.__sent = performance.now();
  const record = () => {
    const all = document.querySelectorAll('#response-content-container');
    const text = all.length ? all[all.length - 1].innerText.trim() : '';
    const seen = window.__answer;
    if (text && (!seen.length || seen[seen.length - 1].text !== text)) {
      seen.push({t: performance.now() - window.__sent, text: text});
    }
  };
  new MutationObserver(record).observe(document.body,
    {subtree: true, childList: true, characterData: true});
}"""


def webui_executable() -> str:
    """The installed open-webui command, or skip naming the setup script."""
    try:
        return find_executable(UiSpec())
    except UiSetupError as exc:
        pytest.skip(f"Open-WebUI is not installed ({exc}); run {SETUP}")


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(f"Debian chromium is not installed; run {SETUP}")
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Python playwright is not installed in the test venv; pip install playwright")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass(frozen=True)
class Answer:
    text: str
    first_text_s: float  # from pressing Enter to the first answer text on screen
    updates: int  # distinct texts seen while it streamed


def open_ui(page: Page, url: str) -> None:
    """Load the UI and wait until it shows its chat box or its onboarding page."""
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    ready = page.locator("#chat-input").or_(page.get_by_role("button", name="Get started"))
    ready.first.wait_for(timeout=60_000)
    if page.locator("#chat-input").count():
        dismiss_release_notes(page)


def create_admin(page: Page, name: str, email: str, password: str) -> None:
    """The first visit to a UI with login on: create the admin account."""
    page.get_by_role("button", name="Get started").click()
    page.get_by_placeholder("Enter Your Full Name").fill(name)
    page.get_by_placeholder("Enter Your Email").fill(email)
    page.get_by_placeholder("Enter Your Password").fill(password)
    page.get_by_role("button", name="Create Admin Account").click()
    page.wait_for_selector("#chat-input", timeout=60_000)
    dismiss_release_notes(page)


def dismiss_release_notes(page: Page) -> None:
    """Open-WebUI greets a new account with its release notes; close them like a person."""
    ok = page.get_by_role("button", name="Okay, Let's Go!")
    try:
        ok.wait_for(timeout=3_000)
    except PlaywrightTimeout:  # none shown
        return
    ok.click()


def open_sidebar(page: Page) -> None:
    button = page.get_by_role("button", name="Open Sidebar")
    if button.count() and button.first.is_visible():
        button.first.click()


def ask(page: Page, model: str, prompt: str, expect: str, timeout_s: float = 120) -> Answer:
    """Pick `model` in the model selector, type the prompt, press Enter, and wait until the
    answer holds `expect` and the UI marks the reply done."""
    page.get_by_role("button", name=f"Selected model: {model}").click()
    page.get_by_role("option", name=f"Select {model} model").click()
    page.locator("#chat-input").fill(prompt)
    page.evaluate(WATCH_ANSWER)
    page.keyboard.press("Enter")
    deadline = time.monotonic() + timeout_s
    page.wait_for_function(
        """expect => {
          const all = document.querySelectorAll('#response-content-container');
          return all.length > 0 && all[all.length - 1].innerText.includes(expect);
        }""",
        arg=expect,
        timeout=timeout_s * 1000,
    )
    last = page.locator("#response-content-container").last
    # Done when the Stop button is gone (the UI has saved the reply by then).
    remaining = max(1.0, deadline - time.monotonic())
    page.get_by_role("button", name="Stop", exact=True).wait_for(
        state="hidden", timeout=remaining * 1000
    )
    seen: list[dict[str, Any]] = page.evaluate("window.__answer")
    return Answer(last.inner_text().strip(), float(seen[0]["t"]) / 1000, len(seen))
