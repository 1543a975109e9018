"""The weights cache: one folder per model and revision, complete only when verified.

Layout under `<cache root>/weights/` (the cache root is `deepfleet.paths.cache_dir()`):

    <kind>/<org>--<name>/<revision>/          the model files, ready for an engine
    <kind>/<org>--<name>/<revision>/.deepfleet-complete.json
                                              written last, after every file matched the hub's
                                              checksum; lists files, sizes and checksums

A folder without the marker is a pull in progress or an interrupted one: it is never served, and
the next pull resumes it (the hub client keeps partial files under `.cache/huggingface/`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from deepfleet.weights.sources import Source

MARKER = ".deepfleet-complete.json"


@dataclass(frozen=True)
class CachedModel:
    kind: str
    repo: str
    revision: str
    path: Path
    complete: bool
    size: int

    @property
    def source(self) -> str:
        scheme = {"hf": "hf://", "modelscope": "modelscope://"}.get(self.kind, "")
        return f"{scheme}{self.repo}@{self.revision}"


def weights_root(cache_root: Path) -> Path:
    return cache_root / "weights"


def model_dir(cache_root: Path, source: Source, revision: str) -> Path:
    """Folder for `source` at `revision` (a commit hash once resolved, so pins stay exact)."""
    org, name = source.repo.split("/", 1)
    return weights_root(cache_root) / source.kind / f"{org}--{name}" / revision.replace("/", "--")


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def read_marker(folder: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((folder / MARKER).read_text())
    return data


def mark_complete(folder: Path, files: dict[str, dict[str, object]]) -> None:
    """Record the verified files; written through a temp file so a crash leaves no marker."""
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    tmp.replace(folder / MARKER)


def unmark(folder: Path) -> None:
    (folder / MARKER).unlink(missing_ok=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def list_models(cache_root: Path) -> list[CachedModel]:
    """Every cached model folder, complete or not, sorted by kind, repo and revision."""
    found: list[CachedModel] = []
    root = weights_root(cache_root)
    for rev_dir in sorted(root.glob("*/*/*")):
        if not rev_dir.is_dir():
            continue
        kind, repo_dir = rev_dir.parent.parent.name, rev_dir.parent.name
        repo = repo_dir.replace("--", "/", 1)
        found.append(
            CachedModel(kind, repo, rev_dir.name, rev_dir, is_complete(rev_dir), _size(rev_dir))
        )
    return found


def remove(cache_root: Path, source: Source) -> list[Path]:
    """Delete the cached folders of `source` (one revision if given, else all); return them."""
    gone = [
        m.path
        for m in list_models(cache_root)
        if m.kind == source.kind
        and m.repo == source.repo
        and (source.revision is None or m.revision == source.revision)
    ]
    for path in gone:
        shutil.rmtree(path)
    return gone
