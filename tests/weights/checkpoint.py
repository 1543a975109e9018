"""A sharded safetensors checkpoint made from the bundled model, for the spread tests.

SmolLM2-135M has 30 layers and tied embeddings; vLLM's PP-2 split gives stage 0 layers 0-14
and stage 1 layers 15-29. The shards: the embedding alone (both stages load it: the last one
for the tied LM head), layers 0-7, 8-14, 15-22, 23-29 + the final norm. So a PP-2 node holds
three of the five shards.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

GROUPS = [(0, 8), (8, 15), (15, 23), (23, 30)]


def _shard_of(name: str) -> int:
    m = re.search(r"\.layers\.(\d+)\.", name)
    if m is None:
        return 0 if "embed_tokens" in name else len(GROUPS)
    layer = int(m.group(1))
    return 1 + next(i for i, (s, e) in enumerate(GROUPS) if s <= layer < e)


def make_sharded(src: Path, dest: Path) -> dict[str, int]:
    """Write the sharded copy of `src` (the bundled model folder) to `dest`; file -> size."""
    dest.mkdir(parents=True)
    count = len(GROUPS) + 1
    names = [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
    tensors: list[dict[str, object]] = [{} for _ in range(count)]
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensors[_shard_of(key)][key] = f.get_tensor(key)
    weight_map = {}
    for i, group in enumerate(tensors):
        save_file(group, str(dest / names[i]), metadata={"format": "pt"})  # type: ignore[arg-type]
        weight_map.update({k: names[i] for k in group})
    index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    for p in src.iterdir():
        if p.is_file() and p.name != "model.safetensors" and not p.name.startswith("deepfleet"):
            shutil.copyfile(p, dest / p.name)
    return {p.name: p.stat().st_size for p in dest.iterdir()}
