"""`deepfleet top`: a live terminal view of the fleet from the engines' and the gateway's
/metrics, for when there is no Grafana."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import aiohttp
import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from deepfleet.cli.common import FILE_OPT, STATE_OPT, load_config, out, resolve_state_dir
from deepfleet.fleet.process import pid_alive
from deepfleet.fleet.state import STATE_FILE
from deepfleet.observability.sd import state_file_reader
from deepfleet.observability.top import Fetch, Frame, TopSampler

_STATE_COLORS = {"ready": "green", "starting": "yellow", "stopping": "dim", "stopped": "dim"}


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _secs(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}ms" if v < 1 else f"{v:.2f}s"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def render(frame: Frame) -> RenderableType:
    gw = "[green]up[/]" if frame.gateway_up else "[bold red]DOWN[/]"
    window = f"rates over {frame.window_s:.1f}s" if frame.window_s else "first sample"
    header = Text.from_markup(
        f"[bold]deepfleet top[/]  gateway {frame.gateway_url} {gw}  {window}  "
        f"{time.strftime('%H:%M:%S')}   Ctrl-C quits"
    )
    models = Table(title="models (gateway)", title_justify="left", expand=False)
    for col in ("model", "ready", "req/s", "5xx/s", "tok/s in", "tok/s out", "TTFT p50",
                "TTFT p99"):  # fmt: skip
        models.add_column(col, justify="left" if col == "model" else "right")
    for m in frame.models:
        ready = f"{m.ready}/{m.replicas}"
        models.add_row(
            m.model,
            f"[{'green' if m.ready else 'bold red'}]{ready}[/]",
            _num(m.rps), _num(m.error_rps), _num(m.prompt_tps), _num(m.output_tps),
            _secs(m.ttft_p50), _secs(m.ttft_p99),
        )  # fmt: skip
    replicas = Table(title="replicas (engines)", title_justify="left", expand=False)
    for col in ("replica", "model", "node", "state", "run", "wait", "KV", "tok/s in",
                "tok/s out", "TTFT p50", "TTFT p99", "hit rate", "restarts"):  # fmt: skip
        replicas.add_column(col, justify="left" if col in ("replica", "model", "node") else "right")
    for r in frame.replicas:
        color = _STATE_COLORS.get(r.state, "red")
        state = f"[{color}]{r.state}[/]" + ("" if r.up else " [bold red](no metrics)[/]")
        replicas.add_row(
            r.replica, r.model, r.node, state, _num(r.running, "{:.0f}"),
            _num(r.waiting, "{:.0f}"), _pct(r.kv_usage), _num(r.prompt_tps), _num(r.output_tps),
            _secs(r.ttft_p50), _secs(r.ttft_p99), _pct(r.hit_rate), str(r.restarts),
        )  # fmt: skip
    return Group(header, models, replicas)


def _fetcher(session: aiohttp.ClientSession) -> Fetch:
    async def fetch(url: str) -> str | None:
        try:
            async with session.get(url) as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    return fetch


async def _run(state_file: Path, interval: float, window: float, once: bool) -> None:
    timeout = aiohttp.ClientTimeout(total=max(1.0, min(interval, 5.0)))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sampler = TopSampler(state_file_reader(state_file), _fetcher(session), window_s=window)
        frame = await sampler.frame()
        if frame is None:
            return
        if once:
            await asyncio.sleep(interval)
            frame = await sampler.frame() or frame
            out.print(render(frame))
            return
        with Live(render(frame), console=out, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                frame = await sampler.frame() or frame
                live.update(render(frame), refresh=True)


def top(
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    interval: float = typer.Option(2.0, "--interval", "-n", help="Seconds between samples."),
    window: float = typer.Option(10.0, "--window", help="Seconds the rates average over."),
    once: bool = typer.Option(False, "--once", help="Print one frame (two samples) and exit."),
) -> None:
    """Live view: replicas, load, tokens/s, TTFT p50/p99 and prefix-cache hit rate."""
    if interval <= 0 or window <= 0:
        raise typer.BadParameter("--interval and --window must be positive")
    sdir = resolve_state_dir(load_config(file) if file else None, state_dir)
    state = state_file_reader(sdir / STATE_FILE)()
    if state is None or not pid_alive(state.controller_pid):
        out.print(f"no fleet is running from {sdir}")
        raise typer.Exit(3)
    # Ctrl-C quits, also when top was started with SIGINT ignored (a shell starts background
    # jobs so, and children inherit it): a terminal program's keys are its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(sdir / STATE_FILE, interval, window, once))


def register(app: typer.Typer) -> None:
    app.command()(top)
