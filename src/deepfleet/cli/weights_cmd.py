"""`deepfleet models pull | list | verify | rm`: model weights in the local cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from deepfleet import paths
from deepfleet.cli.common import console, fail, out
from deepfleet.config import FleetConfig
from deepfleet.weights import cache
from deepfleet.weights.hubs import Hub, HubError, hub_for
from deepfleet.weights.pull import PullError, PullResult, pull
from deepfleet.weights.sources import Source, SourceError, parse_source
from deepfleet.weights.verify import verify_cached


def parse_pullable(text: str, revision: str | None = None) -> Source:
    try:
        source = parse_source(text)
    except SourceError as exc:
        fail(str(exc))
    if not source.pullable:
        fail(f"{text!r}: only hf://org/name and modelscope://org/name sources are pulled")
    return source.with_revision(revision)


def pull_with_progress(
    source: Source,
    hub: Hub,
    cache_root: Path,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    show: bool = True,
) -> PullResult:
    """Pull with a live bar (bytes, rate, ETA) on stderr; `up` uses this too."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not show) as bar:
        task = bar.add_task(str(source), total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return pull(
            source, hub, cache_root, include=include or (), exclude=exclude or (), progress=report
        )


def pull_fleet_weights(cfg: FleetConfig) -> FleetConfig:
    """Pull every hf:// or modelscope:// model of `cfg` (what is missing only, with the live
    bar) and point its `source` at the verified cache folder, so planning and engines see a
    local folder."""
    for i, model in enumerate(cfg.models):
        src = model.weights_source
        if src is None:
            continue
        try:
            res = pull_with_progress(src, hub_for(src), paths.cache_dir())
        except (PullError, HubError) as exc:
            fail(f"models[{i}].source: {exc}")
        model.source = str(res.path)
    return cfg


def register(models_app: typer.Typer) -> None:
    @models_app.command("pull")
    def pull_cmd(
        source: str = typer.Argument(
            ..., help="hf://org/name[@rev] or modelscope://org/name[@rev]."
        ),
        revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit."),
        include: list[str] = typer.Option([], "--include", help="Only files matching this glob."),
        exclude: list[str] = typer.Option([], "--exclude", help="Skip files matching this glob."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Fetch a model into the cache, resuming an interrupted pull; verify every file."""
        src = parse_pullable(source, revision)
        started = time.monotonic()
        try:
            res = pull_with_progress(src, hub_for(src), paths.cache_dir(), include, exclude)
        except (PullError, HubError) as exc:
            fail(str(exc))
        seconds = time.monotonic() - started
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "source": str(src),
                        "revision": res.revision,
                        "path": str(res.path),
                        "files": res.files,
                        "bytes": res.size,
                        "already_complete": res.already_complete,
                        "refetched": list(res.refetched),
                        "seconds": round(seconds, 2),
                    }
                )
            )
            return
        for name in res.refetched:
            console.print(f"[yellow]{name}: checksum mismatch, fetched again and verified[/]")
        state = "already complete" if res.already_complete else f"verified in {seconds:.0f}s"
        console.print(f"{src} @ {res.revision[:12]}: {res.files} files, {state}")
        out.print(str(res.path))

    @models_app.command("list")
    def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
        """Cached models; `partial` marks an interrupted pull (never served)."""
        models = cache.list_models(paths.cache_dir())
        if as_json:
            rows = [
                {"source": m.source, "path": str(m.path), "complete": m.complete, "bytes": m.size}
                for m in models
            ]
            out.print_json(json.dumps(rows))
            return
        for m in models:
            state = "complete" if m.complete else "partial"
            out.print(f"{m.source}\t{state}\t{m.size / 2**30:.2f} GiB\t{m.path}")

    @models_app.command("verify")
    def verify_cmd(source: str = typer.Argument(..., help="hf://org/name[@rev]")) -> None:
        """Re-check cached files against the hub checksums recorded at pull time."""
        src = parse_pullable(source)
        models = [m for m in cache.list_models(paths.cache_dir()) if _matches(m, src)]
        if not models:
            fail(f"{src} is not in the cache; `deepfleet models pull {src}`")
        bad_any = False
        for m in models:
            if not m.complete:
                console.print(f"{m.source}: partial (interrupted pull); pull again to finish")
                bad_any = True
                continue
            bad = verify_cached(m.path)
            for why in bad.values():
                console.print(f"[bold red]{m.source}[/]: {why}")
            bad_any |= bool(bad)
            if not bad:
                console.print(f"{m.source}: every file matches")
        if bad_any:
            fail(f"run `deepfleet models pull {src}` to refetch what failed")

    @models_app.command("rm")
    def rm_cmd(source: str = typer.Argument(..., help="hf://org/name[@rev]")) -> None:
        """Delete a model's cached folders (one revision with @rev)."""
        gone = cache.remove(paths.cache_dir(), parse_pullable(source))
        if not gone:
            fail(f"{source} is not in the cache")
        for path in gone:
            console.print(f"removed {path}")


def _matches(m: cache.CachedModel, src: Source) -> bool:
    return (
        m.kind == src.kind
        and m.repo == src.repo
        and (src.revision is None or m.revision == src.revision)
    )
