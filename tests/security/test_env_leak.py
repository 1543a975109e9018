"""Finding 21: child processes inherited the controller's whole environment, so cloud keys and
tokens in the shell that ran `deepfleet up` reached every engine and Open-WebUI. Children get
an allowlist plus what their launch spec sets."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.process import ManagedProcess


def _environ(pid: int | None) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_a_secret_in_the_controllers_environment_does_not_reach_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPFLEET_TEST_SECRET", "leaked-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-2")
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    spec = LaunchSpec(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={"CUDA_VISIBLE_DEVICES": "1"}
    )
    proc = ManagedProcess(spec, tmp_path / "logs" / "child.log")

    async def scenario() -> bytes:
        await proc.start()
        try:
            return _environ(proc.pid)
        finally:
            await proc.stop(5)

    environ = dict(
        item.split("=", 1) for item in asyncio.run(scenario()).decode().split("\0") if item
    )
    assert "DEEPFLEET_TEST_SECRET" not in environ
    assert "AWS_SECRET_ACCESS_KEY" not in environ
    assert environ["VLLM_LOGGING_LEVEL"] == "DEBUG"  # the engine's own variables pass
    assert environ["CUDA_VISIBLE_DEVICES"] == "1"  # and what the launcher sets
    assert "PATH" in environ
