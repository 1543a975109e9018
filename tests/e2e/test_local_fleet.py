"""`deepfleet up` with the real vLLM CPU engine, driven with the official openai SDK.

The tests share one fleet and run in file order; the last one stops it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import signal
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, Fleet, status_json, wait_ready

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def client(fleet: Fleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.url + "/v1", api_key="none", max_retries=0, timeout=120)


def test_answers_paris_with_usage(fleet: Fleet) -> None:
    r = client(fleet).chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=20
    )
    assert "Paris" in (r.choices[0].message.content or "")
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


def test_chat_stream_with_usage(fleet: Fleet) -> None:
    stream = client(fleet).chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, chunks = "", None, 0
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert "Paris" in text and chunks > 3
    assert usage is not None and usage.completion_tokens > 0


def test_completions_stream_and_not(fleet: Fleet) -> None:
    c = client(fleet)
    r = c.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert "Paris" in r.choices[0].text
    assert r.usage is not None and r.usage.completion_tokens == 5
    parts = [
        ch.choices[0].text
        for ch in c.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, stream=True
        )
        if ch.choices
    ]
    assert "Paris" in "".join(parts)


def test_models_list_and_unknown_model(fleet: Fleet) -> None:
    c = client(fleet)
    assert [m.id for m in c.models.list().data] == [MODEL]
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4", messages=QUESTION)


def test_status_json(fleet: Fleet) -> None:
    st = status_json(fleet.state_dir)
    assert st["running"] is True
    reps = st["replicas"]
    assert isinstance(reps, list) and len(reps) == 1
    r = reps[0]
    assert (r["model"], r["state"], r["restarts"]) == (MODEL, "ready", 0)
    assert r["pid"] and r["endpoint"].startswith("http://127.0.0.1:")
    assert r["uptime_s"] is not None and r["uptime_s"] >= 0


def test_sigkill_engine_requests_wait_for_its_restart(fleet: Fleet) -> None:
    """The only replica killed: a request sent meanwhile is held while it restarts (up to the
    model's queue_timeout_s, 60 s) and answered; 503 with Retry-After only past that."""
    st = status_json(fleet.state_dir)
    pid = st["replicas"][0]["pid"]  # type: ignore[index]
    fleet.snapshot_tree()
    import os

    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # the supervisor sees the exit (it restarts after a 1 s backoff)
    started = time.monotonic()
    r = httpx.post(
        fleet.url + "/v1/chat/completions",
        timeout=200,
        json={"model": MODEL, "messages": QUESTION, "max_tokens": 5},
    )
    waited = time.monotonic() - started
    assert waited > 1.0, "the request was not held while the replica restarted"
    if r.status_code != 200:  # a restart slower than 60 s (a loaded 2-core box)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert "waited 60s" in err["message"] and waited >= 59
    st = wait_ready(fleet.state_dir, fleet.proc, fleet.log)
    rep = st["replicas"][0]  # type: ignore[index]
    assert rep["restarts"] == 1 and rep["pid"] != pid
    assert "signal 9" in rep["last_exit"]
    fleet.snapshot_tree()
    r2 = client(fleet).chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=20
    )
    assert "Paris" in (r2.choices[0].message.content or "")


def test_ctrl_c_leaves_no_process(fleet: Fleet) -> None:
    fleet.snapshot_tree()
    assert len(fleet.seen) >= 3  # gateway, API server, engine core (and workers)
    fleet.proc.send_signal(signal.SIGINT)
    assert fleet.proc.wait(60) == 0
    time.sleep(0.5)
    assert fleet.survivors() == []
    assert status_json(fleet.state_dir)["running"] is False
