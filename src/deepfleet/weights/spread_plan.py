"""Who fetches what from whom when a model is spread over a cluster (pure), and the file
where the spread's progress is kept.

The head has the verified folder (pulled from the hub once). Without racks every other node
fetches its own files from the head, all at once. With racks (`{node address: rack name}`),
the head's uplink is spent once per rack: in wave 1 one seed per rack (the first node of the
rack in the given order; none for the head's own rack) fetches everything its rack needs from
the head; in wave 2 every other node fetches from its rack's seed. Nodes that need nothing
are left out.

A folder is named by a key that means the same on every node: its path under the weights
cache (`<kind>/<org>--<name>/<commit>`, resolved against each node's own cache dir) or, for a
folder outside the cache, its absolute path ("the same path on every node").
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfleet.weights import cache


@dataclass(frozen=True)
class Transfer:
    node: str
    """Node id of the fetching node."""
    seed: str
    """Node id of the node it fetches from."""
    files: frozenset[str]


def folder_key(folder: Path, cache_root: Path) -> str:
    """`folder` as a key every node resolves to its own copy (see the module docstring)."""
    folder, root = folder.resolve(), cache.weights_root(cache_root).resolve()
    return str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder)


def local_folder(key: str, cache_root: Path) -> Path:
    """The folder a key names on this node (its cache root given)."""
    return Path(key) if Path(key).is_absolute() else cache.weights_root(cache_root) / key


def waves(
    head: str,
    order: Sequence[str],
    needs: Mapping[str, frozenset[str]],
    racks: Mapping[str, str] | None = None,
) -> list[list[Transfer]]:
    """The transfers, in waves; each wave runs in parallel after the one before.

    `order`: node ids (the head first); `needs`: files per node id; `racks`: rack per node id.
    """
    want = {n: needs.get(n, frozenset()) for n in order if n != head and needs.get(n)}
    if not racks:
        return [[Transfer(n, head, files) for n, files in want.items()]] if want else []
    members: dict[str, list[str]] = {}
    for n in order:
        members.setdefault(racks.get(n, "?" + n), []).append(n)
    first, second = [], []
    for nodes in members.values():
        if head in nodes:
            first += [Transfer(n, head, want[n]) for n in nodes if n in want]
            continue
        wanted = [n for n in nodes if n in want]
        if not wanted:
            continue
        seed = nodes[0]
        union = frozenset().union(*(want[n] for n in wanted))
        first.append(Transfer(seed, head, union))
        second += [Transfer(n, seed, want[n]) for n in wanted if n != seed]
    return [w for w in (first, second) if w]


SPREAD_FILE = "spread.json"
"""In the fleet's state dir: the last spread's per-node progress, read by `deepfleet status`."""


def write_progress(state_dir: Path, model: str, nodes: Mapping[str, object]) -> None:
    """Replace the progress file whole (temp file + rename), so a reader never sees half."""
    state_dir.mkdir(parents=True, exist_ok=True)
    body = {"model": model, "updated": time.time(), "nodes": dict(nodes)}
    tmp = state_dir / f".{SPREAD_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(state_dir / SPREAD_FILE)


def read_progress(state_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state_dir / SPREAD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data
