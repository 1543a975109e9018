"""A node fetches the files it needs from a seed node (weights/seed.py) over the LAN.

Same contract as a pull from the hub (weights/pull.py): free space checked first, each file
resumed from its partial bytes, hashed against the checksum the hub published (the seed's
manifest carries it), fetched once more from scratch on a mismatch, and the folder's
complete-marker written last. The marker lists the files this node holds, which may be a
subset of the checkpoint (a pipeline stage's shards); a later fetch of more files adds to it.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import httpx

from deepfleet.weights import cache
from deepfleet.weights.hubs import partial_path
from deepfleet.weights.pull import NotEnoughSpace, PullError, bytes_on_disk, disk_free
from deepfleet.weights.seed import NODE_HEADER
from deepfleet.weights.verify import Expected, check_file

TIMEOUT = httpx.Timeout(30.0, read=120.0)
REPORT_S = 0.5


@dataclass(frozen=True)
class FetchResult:
    node: str
    path: str
    files: int
    size: int
    fetched_bytes: int
    seconds: float
    already_complete: bool
    refetched: tuple[str, ...] = ()


def _expected(files: dict[str, Any], names: Collection[str]) -> list[Expected]:
    unknown = sorted(set(names) - set(files))
    if unknown:
        raise PullError(f"the seed's manifest has no {', '.join(unknown)}")
    return [
        Expected(
            n,
            int(files[n]["size"]),
            cast(Literal["sha256", "git-sha1"], files[n]["algo"]),
            str(files[n]["digest"]),
        )
        for n in sorted(names)
    ]


def _held(folder: Path) -> dict[str, Any]:
    """Files the folder's marker already vouches for (none when it has no marker)."""
    if not cache.is_complete(folder):
        return {}
    return dict(cast(dict[str, Any], cache.read_marker(folder)["files"]))


class _Client:
    def __init__(self, url: str, token: str, node: str) -> None:
        headers = {"Authorization": f"Bearer {token}", NODE_HEADER: node}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT)
        self.node = node

    def manifest(self) -> dict[str, Any]:
        r = self.http.get("/manifest")
        if r.status_code != 200:
            raise PullError(f"seed {self.http.base_url}: manifest answered {r.status_code}")
        return dict(r.json()["files"])

    def download(self, folder: Path, exp: Expected, force: bool) -> int:
        """Fetch `exp` into `folder`, resuming its partial file unless `force`; bytes received."""
        dest, part = folder / exp.name, partial_path(folder, exp.name)
        if force:
            part.unlink(missing_ok=True)
            dest.unlink(missing_ok=True)
        if dest.is_file() and dest.stat().st_size == exp.size:
            return 0
        part.parent.mkdir(parents=True, exist_ok=True)
        got = 0
        with part.open("ab") as f:
            start = f.tell()
            headers = {"Range": f"bytes={start}-"} if start else {}
            with self.http.stream("GET", f"/files/{exp.name}", headers=headers) as r:
                if r.status_code == 200 and start:
                    f.truncate(0)  # the seed sent the whole file
                    f.seek(0)
                elif r.status_code not in (200, 206):
                    raise PullError(f"seed: {exp.name} answered {r.status_code}")
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
                    got += len(chunk)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part.replace(dest)
        return got

    def report(self, data: dict[str, Any]) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.http.post("/progress", json={"node": self.node, **data}, timeout=5)


def fetch_from_seed(
    url: str,
    token: str,
    node: str,
    folder: Path,
    names: Collection[str],
    free_space: Callable[[Path], int] = disk_free,
) -> FetchResult:
    """Bring `names` of the seed's model into `folder` on this node, verified."""
    started = time.monotonic()
    client = _Client(url, token, node)
    try:
        files = _expected(client.manifest(), names)
        held = _held(folder)
        total = sum(f.size for f in files)
        if all(held.get(f.name, {}).get("digest") == f.digest for f in files):
            client.report({"done": total, "total": total, "state": "complete"})
            return FetchResult(node, str(folder), len(files), total, 0, 0.0, True)
        needed = total - bytes_on_disk(folder, files)
        free = free_space(folder)
        if needed > free:
            client.report({"done": 0, "total": total, "state": "error: not enough disk"})
            raise NotEnoughSpace(folder, needed, free)
        folder.mkdir(parents=True, exist_ok=True)
        cache.unmark(folder)  # the folder changes: not servable until marked again
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(client, folder, files, stop), daemon=True)
        watcher.start()
        fetched, refetched = 0, []
        try:
            for f in files:
                fetched += client.download(folder, f, force=False)
                if check_file(folder, f) is None:
                    continue
                fetched += client.download(folder, f, force=True)
                why = check_file(folder, f)
                if why is not None:
                    raise PullError(f"{node}: {why} (fetched twice from the seed)")
                refetched.append(f.name)
        finally:
            stop.set()
            watcher.join(5)
        entry: dict[str, dict[str, object]] = {
            f.name: {"size": f.size, "algo": f.algo, "digest": f.digest} for f in files
        }
        shutil.rmtree(folder / ".cache", ignore_errors=True)
        cache.mark_complete(folder, {**held, **entry})
        client.report({"done": total, "total": total, "state": "complete"})
        seconds = time.monotonic() - started
        return FetchResult(
            node, str(folder), len(files), total, fetched, seconds, False, tuple(refetched)
        )
    except httpx.HTTPError as exc:
        raise PullError(f"{node}: seed {url}: {type(exc).__name__}: {exc}") from None
    finally:
        client.http.close()


def _watch(client: _Client, folder: Path, files: list[Expected], stop: threading.Event) -> None:
    total = sum(f.size for f in files)
    while not stop.wait(REPORT_S):
        with contextlib.suppress(OSError):
            done = min(bytes_on_disk(folder, files), total)
            client.report({"done": done, "total": total, "state": "fetching"})
