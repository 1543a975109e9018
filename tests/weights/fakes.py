"""An in-memory hub implementing the Hub protocol, for fast tests of the pull logic."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from deepfleet.weights.sources import Source
from deepfleet.weights.verify import Expected


@dataclass
class FakeHub:
    files: dict[str, bytes]
    revision: str = "c0ffee"
    corrupt_next: set[str] = field(default_factory=set)
    downloads: list[tuple[str, bool]] = field(default_factory=list)

    def resolve(self, source: Source) -> tuple[str, list[Expected]]:
        return self.revision, [
            Expected(n, len(b), "sha256", hashlib.sha256(b).hexdigest())
            for n, b in self.files.items()
        ]

    def download(self, source: Source, revision: str, name: str, folder: Path, force: bool) -> None:
        self.downloads.append((name, force))
        data = self.files[name]
        if name in self.corrupt_next:
            self.corrupt_next.discard(name)
            data = bytes([data[0] ^ 1]) + data[1:]
        (folder / name).write_bytes(data)
