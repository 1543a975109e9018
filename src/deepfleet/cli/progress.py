"""How the fleet flow's progress events look on a terminal (deepfleet.fleet.events)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.status import Status

from deepfleet.cli.common import out
from deepfleet.cli.live import StatusPrinter
from deepfleet.fleet.events import (
    Adopted,
    ControllerKilled,
    FleetEvent,
    ModelPrepared,
    PreparingModel,
    Serving,
    Starting,
    StartProgress,
    StateChanged,
    StopRequested,
)
from deepfleet.fleet.state import FleetState

PREPARING = "[bold]preparing the bundled model[/]"


def print_ready(state: FleetState) -> None:
    """The URL, a curl line and the next commands, on stdout."""
    model = state.models[0].name if state.models else "MODEL"
    url = state.gateway_url
    out.print(f"\n[bold green]deepfleet is serving[/] at {url}/v1")
    out.print(
        f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", '
        f'"content": "What is the capital of France?"}}]}}\''
    )
    out.print(
        "  deepfleet chat 'What is the capital of France?'   |   deepfleet status   |   "
        "deepfleet down\n"
    )
    for s in state.services:
        out.print(f"  {s.replica_id}: {s.url}")


class Progress:
    """An EventSink that renders on `console` (stderr), with a spinner while something waits.
    Use as a context manager so a spinner never outlives a failure."""

    def __init__(self, console: Console, notes: Callable[[], list[str]] = list) -> None:
        self._console = console
        self._notes = notes  # lines printed after Starting (written by then, e.g. a key file)
        self._printer = StatusPrinter(console)
        self._status: Status | None = None

    def __call__(self, event: FleetEvent) -> None:
        match event:
            case PreparingModel(step="", elapsed_s=_):
                self._start(f"{PREPARING} (about 30 s, once)")
            case PreparingModel(step=step, elapsed_s=t):
                if self._status is not None:
                    self._status.update(f"{PREPARING}: {step} ({t:.0f}s)")
            case ModelPrepared(path=path, elapsed_s=t):
                self._stop()
                self._console.print(f"bundled model ready in {t:.0f}s: {path}")
            case Starting(replicas=n, gateway_url=url, logs=logs):
                self._console.print(
                    f"starting {n} replica(s) and the gateway on {url}; logs in {logs}"
                )
                for line in self._notes():
                    self._console.print(line)
            case Adopted(adopted=ids, replaced=stale):
                if ids:
                    self._console.print(
                        "adopted what a dead controller left running (same processes, not "
                        f"restarted): {', '.join(ids)}"
                    )
                if stale:
                    self._console.print(
                        f"replaced (another config, or not wanted): {', '.join(stale)}"
                    )
            case StateChanged(state=state):
                self._printer.update(state)
            case StartProgress(ready=ready, total=total, elapsed_s=t):
                if self._status is not None:
                    self._status.update(
                        f"starting the fleet: {ready}/{total} replicas ready ({t:.0f}s)"
                    )
            case Serving(state=state):
                print_ready(state)
            case StopRequested(signal=name, again=again):
                if again:
                    self._console.print(
                        "already stopping; engines get SIGKILL after their grace period"
                    )
                else:
                    self._console.print(f"\n{name}: stopping the fleet")
            case ControllerKilled(pid=pid, timeout_s=t):
                self._console.print(f"controller {pid} did not stop in {t:.0f}s: SIGKILL")
            case _:
                pass

    @contextmanager
    def spinner(self, text: str) -> Iterator[None]:
        """A spinner with `text` (updated by StartProgress) while the block runs."""
        self._start(text)
        try:
            yield
        finally:
            self._stop()

    def _start(self, text: str) -> None:
        self._stop()
        self._status = self._console.status(text)
        self._status.start()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
