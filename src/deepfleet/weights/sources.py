"""A model's `source` string, parsed into a typed Source.

Accepted forms: `bundled`; `hf://org/name[@revision]`; `modelscope://org/name[@revision]`;
a local folder (absolute, `./`, `../` or `~/`); a bare hub id `org/name` or catalog name (the
engine fetches it itself, deepfleet does not pull it). Parsing is pure: no file system or network
access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SourceKind = Literal["bundled", "hf", "modelscope", "local", "hub_id"]
SCHEMES: dict[str, SourceKind] = {"hf://": "hf", "modelscope://": "modelscope"}
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a catalog name such as DeepSeek-R1
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class SourceError(ValueError):
    """The source string is malformed; the message says what form is expected."""


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    repo: str = ""
    revision: str | None = None
    path: Path | None = None

    @property
    def pullable(self) -> bool:
        """True for hub sources that `deepfleet models pull` fetches into the cache."""
        return self.kind in ("hf", "modelscope")

    def with_revision(self, revision: str | None) -> Source:
        return Source(self.kind, self.repo, revision or self.revision, self.path)

    def __str__(self) -> str:
        if self.kind == "bundled":
            return "bundled"
        if self.kind == "local":
            return str(self.path)
        if self.kind == "hub_id":
            return self.repo
        scheme = next(s for s, k in SCHEMES.items() if k == self.kind)
        return f"{scheme}{self.repo}" + (f"@{self.revision}" if self.revision else "")


def parse_source(text: str) -> Source:
    """Parse a source string; raise SourceError naming the expected forms."""
    s = text.strip()
    if s == "bundled":
        return Source("bundled")
    for scheme, kind in SCHEMES.items():
        if s.startswith(scheme):
            repo, _, revision = s[len(scheme) :].partition("@")
            if not _REPO.match(repo):
                raise SourceError(f"{s!r}: expected {scheme}org/name[@revision]")
            if "@" in s and not _REVISION.match(revision):
                raise SourceError(f"{s!r}: the revision after @ is empty or malformed")
            return Source(kind, repo, revision or None)
    if "://" in s:
        raise SourceError(
            f"{s!r}: unknown scheme; use hf://org/name, modelscope://org/name, a local folder "
            "or `bundled`"
        )
    if s.startswith(("/", "./", "../", "~")):
        return Source("local", path=Path(s).expanduser())
    if _REPO.match(s) or _NAME.match(s):
        return Source("hub_id", repo=s)
    raise SourceError(
        f"{s!r}: expected `bundled`, hf://org/name[@revision], modelscope://org/name[@revision], "
        "a folder (/..., ./..., ~/...) or a hub id org/name"
    )
