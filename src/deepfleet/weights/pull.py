"""Pull a hub model into the cache: space check, per-file fetch with resume, checksum, marker.

Contract: the folder gets its complete-marker only after every selected file matched the hub's
checksum; a file that fails is fetched again once from scratch, and a second failure stops the
pull with the reason. Progress is measured from the bytes on disk (finished files plus the hub
client's partial files), so it is right after a resume and needs no hook into the client.
"""

from __future__ import annotations

import contextlib
import fnmatch
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deepfleet.weights import cache
from deepfleet.weights.hubs import Hub
from deepfleet.weights.sources import Source
from deepfleet.weights.verify import Expected, check_file

Progress = Callable[[int, int], None]
"""Called with (bytes on disk, bytes in total) while a pull runs."""

FreeSpace = Callable[[Path], int]


class PullError(RuntimeError):
    """The pull cannot finish; the message says why and what to do."""


class NotEnoughSpace(PullError):
    def __init__(self, path: Path, needed: int, free: int) -> None:
        super().__init__(
            f"not enough disk space at {path}: the pull needs {gib(needed)} more, "
            f"{gib(free)} is free; free space or set DEEPFLEET_CACHE_DIR to a larger disk"
        )
        self.needed, self.free = needed, free


@dataclass(frozen=True)
class PullResult:
    path: Path
    revision: str
    files: int
    size: int
    already_complete: bool
    refetched: tuple[str, ...] = ()


def gib(n: int) -> str:
    return f"{n:,} bytes ({n / 2**30:.1f} GiB)"


def disk_free(path: Path) -> int:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def select(
    files: Sequence[Expected], include: Sequence[str], exclude: Sequence[str]
) -> list[Expected]:
    """Files matching any `include` glob (all when empty) and no `exclude` glob."""
    return [
        f
        for f in files
        if (not include or any(fnmatch.fnmatch(f.name, p) for p in include))
        and not any(fnmatch.fnmatch(f.name, p) for p in exclude)
    ]


def _partial_dir(folder: Path) -> Path:
    return folder / ".cache"


def bytes_on_disk(folder: Path, files: Sequence[Expected]) -> int:
    """Finished bytes of `files` plus partial downloads the hub client keeps for them."""
    done = 0
    for f in files:
        p = folder / f.name
        done += min(p.stat().st_size, f.size) if p.is_file() else 0
    partial = _partial_dir(folder)
    if partial.is_dir():
        done += sum(p.stat().st_size for p in partial.rglob("*.incomplete") if p.is_file())
    return done


def _missing(folder: Path, files: Sequence[Expected]) -> int:
    return sum(f.size for f in files) - bytes_on_disk(folder, files)


class _Watcher(threading.Thread):
    def __init__(self, folder: Path, files: Sequence[Expected], report: Progress) -> None:
        super().__init__(daemon=True)
        self.folder, self.files, self.report = folder, files, report
        self.total = sum(f.size for f in files)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.tick()

    def tick(self) -> None:
        with contextlib.suppress(OSError):  # a partial file renamed while we looked
            self.report(min(bytes_on_disk(self.folder, self.files), self.total), self.total)


def pull(
    source: Source,
    hub: Hub,
    cache_root: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    progress: Progress | None = None,
    free_space: FreeSpace = disk_free,
) -> PullResult:
    revision, listed = hub.resolve(source)
    files = select(listed, include, exclude)
    if not files:
        raise PullError(f"{source}: no files match the include/exclude patterns")
    folder = cache.model_dir(cache_root, source, revision)
    total = sum(f.size for f in files)
    if cache.is_complete(folder):
        return PullResult(folder, revision, len(files), total, True)
    needed = _missing(folder, files)
    free = free_space(folder)
    if needed > free:
        raise NotEnoughSpace(folder, needed, free)
    folder.mkdir(parents=True, exist_ok=True)
    watcher = _Watcher(folder, files, progress or (lambda done, total: None))
    watcher.start()
    try:
        refetched = tuple(
            f.name for f in files if _fetch_verified(source, hub, revision, folder, f)
        )
    finally:
        watcher.stop.set()
        watcher.tick()
    shutil.rmtree(_partial_dir(folder), ignore_errors=True)
    cache.mark_complete(
        folder, {f.name: {"size": f.size, "algo": f.algo, "digest": f.digest} for f in files}
    )
    return PullResult(folder, revision, len(files), total, False, refetched)


def _fetch_verified(source: Source, hub: Hub, revision: str, folder: Path, f: Expected) -> bool:
    """Fetch and check one file; True when it failed its checksum once and was fetched again."""
    hub.download(source, revision, f.name, folder, force=False)
    if check_file(folder, f) is None:
        return False
    hub.download(source, revision, f.name, folder, force=True)
    why = check_file(folder, f)
    if why is not None:
        raise PullError(f"{source}: {why} (fetched twice); the hub's copy may be damaged")
    return True
