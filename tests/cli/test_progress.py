"""How the CLI shows the fleet flow's events."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from deepfleet.cli import progress as progress_mod
from deepfleet.cli.progress import Progress
from deepfleet.fleet.events import (
    ControllerKilled,
    FleetEvent,
    ModelPrepared,
    PreparingModel,
    Serving,
    Starting,
    StateChanged,
    StopRequested,
)
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus

STATE = FleetState(
    1,
    "http://127.0.0.1:8000",
    models=[ModelRoute("tiny", "round_robin")],
    replicas=[ReplicaStatus("tiny-0", "tiny", "vllm", "http://e", ReplicaState.READY, pid=7)],
)


@pytest.mark.parametrize(
    ("event", "shown"),
    [
        (Starting(2, "http://127.0.0.1:8000", Path("/s/logs")),
         "starting 2 replica(s) and the gateway on http://127.0.0.1:8000; logs in /s/logs\nnote"),
        (StateChanged(STATE), "tiny-0: ready pid 7 http://e"),
        (ModelPrepared(Path("/m"), 31.2), "bundled model ready in 31s: /m"),
        (StopRequested("SIGINT", again=False), "\nSIGINT: stopping the fleet"),
        (StopRequested("SIGINT", again=True),
         "already stopping; engines get SIGKILL after their grace period"),
        (ControllerKilled(42, 60), "controller 42 did not stop in 60s: SIGKILL"),
    ],
)  # fmt: skip
def test_events_on_stderr(event: FleetEvent, shown: str) -> None:
    buf = io.StringIO()
    with Progress(Console(file=buf, width=200), lambda: ["note"]) as progress:
        progress(event)
    assert shown in buf.getvalue()


def test_serving_prints_the_url_and_a_curl_line(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(progress_mod, "out", Console(file=buf, width=200))
    Progress(Console(file=io.StringIO()))(Serving(STATE))
    text = buf.getvalue()
    assert "deepfleet is serving at http://127.0.0.1:8000/v1" in text
    assert "curl http://127.0.0.1:8000/v1/chat/completions" in text and '"model": "tiny"' in text


def test_a_spinner_ends_with_its_block() -> None:
    progress = Progress(Console(file=io.StringIO()))
    with pytest.raises(RuntimeError), progress:
        progress(PreparingModel("", 0.0))
        raise RuntimeError
    assert progress._status is None
