"""What each node will hold of a pulled model (hf://, modelscope://), for the doctor's disk check.

A pulled model lands in the weights cache of every node; a node holds the whole checkpoint, or
with pipeline stages spanning nodes the shards of its stages only (weights/stages.py). When the
head's cache already has the model, that share is computed from its index; before the first
pull it is unknown here (the disk check then uses the planner's weight size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from deepfleet import paths
from deepfleet.config.schema import FleetConfig, ParallelSpec
from deepfleet.weights import cache
from deepfleet.weights.stages import files_for_stages


def cached_folder(cfg: FleetConfig, index: int) -> Path | None:
    src = cfg.models[index].weights_source
    if src is None:
        return None
    found = [
        m.path
        for m in cache.list_models(paths.cache_dir())
        if m.complete and m.kind == src.kind and m.repo == src.repo
        and (src.revision is None or m.revision == src.revision)
    ]  # fmt: skip
    return found[-1] if found else None


def node_share(cfg: FleetConfig, index: int) -> int | None:
    """Bytes the busiest node holds of model `index` (None when the head has no copy yet)."""
    folder = cached_folder(cfg, index)
    if folder is None:
        return None
    files = cast(dict[str, Any], cache.read_marker(folder)["files"])
    par = cfg.models[index].parallel
    tp, pp = (par.tp, par.pp) if isinstance(par, ParallelSpec) else (1, 1)
    per_node = max(1, cfg.cluster.devices_per_node // tp)
    if tp * pp <= cfg.cluster.devices_per_node:
        return sum(int(f["size"]) for f in files.values())
    shares = [
        files_for_stages(folder, list(files), pp, range(k, min(k + per_node, pp)))
        for k in range(0, pp, per_node)
    ]
    return max(sum(int(files[n]["size"]) for n in share) for share in shares)


def weights_path() -> str:
    return str(cache.weights_root(paths.cache_dir()))
