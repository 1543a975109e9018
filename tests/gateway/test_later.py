"""Deferred bookkeeping runs off the path, in order, and is never lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from deepfleet.gateway.later import Later


async def test_jobs_wait_for_run_and_keep_their_order() -> None:
    later, done = Later(delay_s=60), []
    later.add(done.append, 1)
    later.add(done.append, 2)
    assert done == [] and len(later) == 2
    later.run()
    assert done == [1, 2] and len(later) == 0


async def test_the_timer_runs_what_nobody_ran() -> None:
    later, done = Later(delay_s=0.01), []
    later.add(done.append, 1)
    await asyncio.sleep(0.05)
    assert done == [1]
    later.add(done.append, 2)  # a new timer for the next job
    await asyncio.sleep(0.05)
    assert done == [1, 2]


async def test_a_failing_job_is_logged_and_the_rest_run(caplog: pytest.LogCaptureFixture) -> None:
    later, done = Later(delay_s=60), []

    def fail() -> None:
        raise RuntimeError("boom")

    later.add(fail)
    later.add(done.append, 1)
    with caplog.at_level(logging.ERROR):
        later.run()
    assert done == [1]
    assert "deferred gateway bookkeeping failed" in caplog.text


async def test_jobs_added_while_running_run_too() -> None:
    later, done = Later(delay_s=60), []
    later.add(lambda: later.add(done.append, "nested"))
    later.run()
    assert done == ["nested"]


def test_without_a_loop_a_job_runs_at_once() -> None:
    later, done = Later(), []
    later.add(done.append, 1)
    assert done == [1]
