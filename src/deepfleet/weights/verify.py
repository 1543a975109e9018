"""Checksums of pulled files against what the hub publishes for them.

The Hugging Face hub (and mirrors speaking its protocol) publishes, per file, its size and either
the LFS sha256 of the content (large files) or the git blob id, a sha1 over
`b"blob <size>\\0" + content` (small files). Every file is checked against one of the two; a file
the hub gives no checksum for fails, so nothing unverified is ever marked complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from deepfleet.weights import cache

_CHUNK = 8 << 20


@dataclass(frozen=True)
class Expected:
    name: str
    size: int
    algo: Literal["sha256", "git-sha1"]
    digest: str


def file_digest(path: Path, algo: Literal["sha256", "git-sha1"]) -> str:
    h = hashlib.sha256() if algo == "sha256" else hashlib.sha1(usedforsecurity=False)
    if algo == "git-sha1":
        h.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_file(folder: Path, exp: Expected) -> str | None:
    """None when the file matches; otherwise why it does not."""
    path = folder / exp.name
    if not path.is_file():
        return f"{exp.name}: missing"
    if path.stat().st_size != exp.size:
        return f"{exp.name}: {path.stat().st_size} bytes, the hub says {exp.size}"
    got = file_digest(path, exp.algo)
    if got != exp.digest:
        return f"{exp.name}: {exp.algo} {got[:12]}..., the hub says {exp.digest[:12]}..."
    return None


def check_all(folder: Path, expected: Iterable[Expected]) -> dict[str, str]:
    """Map of file name to the reason it failed; empty when every file matches."""
    bad: dict[str, str] = {}
    for exp in expected:
        why = check_file(folder, exp)
        if why is not None:
            bad[exp.name] = why
    return bad


def verify_cached(folder: Path) -> dict[str, str]:
    """Check a complete cache folder against the checksums its marker recorded at pull time.

    A folder that fails loses its marker, so it is not served and the next pull refetches the
    bad files. Raises FileNotFoundError for a folder without a marker (never completed).
    """
    files = cast(dict[str, dict[str, object]], cache.read_marker(folder)["files"])
    expected = [
        Expected(
            name,
            cast(int, f["size"]),
            cast(Literal["sha256", "git-sha1"], f["algo"]),
            cast(str, f["digest"]),
        )
        for name, f in files.items()
    ]
    bad = check_all(folder, expected)
    if bad:
        cache.unmark(folder)
    return bad
