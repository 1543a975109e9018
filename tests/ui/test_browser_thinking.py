"""With an R1-style engine (the simulator, reasoning parser on) Open-WebUI shows the thinking as
its own collapsible block, apart from the answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deepfleet.sim.output import ANSWER, REASONING
from tests.ui.browser import DOCS, ask, chromium, chromium_path, open_ui, webui_executable
from tests.ui.rig import R1_MODEL, r1_sim_with_ui

pytestmark = pytest.mark.slow


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


# Words only the simulator's reasoning uses, and words only its answer uses.
THINKING_ONLY = _words(REASONING) - _words(ANSWER)
ANSWER_ONLY = _words(ANSWER) - _words(REASONING)


def test_thinking_block_apart_from_answer(tmp_path: Path) -> None:
    webui_executable()
    chromium_path()
    with r1_sim_with_ui(tmp_path) as rig, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        open_ui(page, rig.ui_url)  # single-user: straight to the chat, no login
        answer = ask(page, R1_MODEL, "What is the capital of France?", "Thought for")
        reply = page.locator("#response-content-container").last
        toggle = reply.get_by_role("button", name=re.compile(r"Thought for \d+ second"))
        assert toggle.get_attribute("aria-expanded") == "false"  # collapsed by default
        toggle.click()
        block = toggle.locator("xpath=..")
        block.get_by_text(re.compile(r"\w+ \w+ \w+")).first.wait_for(timeout=10_000)
        thinking = block.inner_text().strip()
        rest = reply.inner_text().strip().replace(thinking, "").strip()
        page.screenshot(path=str(DOCS / "ui-thinking.png"))

        said, thought = _words(rest), _words(thinking)
        assert thought & THINKING_ONLY and not thought & ANSWER_ONLY, thinking
        assert said & ANSWER_ONLY and not said & THINKING_ONLY, rest
        assert "</think>" not in reply.inner_text()
        assert answer.updates >= 3  # "Thinking...", then the block, then the answer streaming
        print(f"\nthinking shown {answer.first_text_s:.2f}s after Enter; {answer.updates} updates")
