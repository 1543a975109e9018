"""Which files of a checkpoint each pipeline stage (and so each node) needs.

A sharded safetensors checkpoint has `model.safetensors.index.json`, whose `weight_map` names
the file holding every tensor. vLLM gives pipeline stage `r` of `pp` the decoder layers
`get_pp_indices(num_layers, r, pp)` (vllm/distributed/utils.py, mirrored in `layer_ranges`,
VLLM_PP_LAYER_PARTITION included), the embedding to the first stage and the final norm and LM
head to the last. A stage therefore needs the shards holding its layers, plus every file that
is not a weight shard (config, tokenizer, the index itself). Tensors of layers at or past
`num_hidden_layers` (DeepSeek's MTP layer 61) go with the last stage, as do names that carry no
layer number and are not the embedding. A checkpoint without an index is one file: every stage
needs all of it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

INDEX = "model.safetensors.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EMBED = re.compile(r"embed_tokens|wte|word_embeddings")


def layer_ranges(num_layers: int, pp: int, partition: str | None = None) -> list[tuple[int, int]]:
    """[start, end) of each stage's decoder layers, exactly as vLLM's `get_pp_indices`.

    `partition`: the VLLM_PP_LAYER_PARTITION value ("15,16,15,15"), which overrides the split.
    """
    if partition:
        sizes = [int(x) for x in partition.split(",")]
        if len(sizes) != pp or sum(sizes) != num_layers:
            raise ValueError(
                f"VLLM_PP_LAYER_PARTITION={partition!r} must give {pp} stages summing to "
                f"{num_layers} layers"
            )
    else:
        sizes = [num_layers // pp] * pp
        for i in range(2, num_layers % pp + 2):
            sizes[-i] += 1
    starts = [sum(sizes[:r]) for r in range(pp)]
    return [(s, s + n) for s, n in zip(starts, sizes, strict=True)]


def tensor_stages(name: str, ranges: list[tuple[int, int]], tied: bool) -> set[int]:
    """The stages that load tensor `name`."""
    last = len(ranges) - 1
    m = _LAYER.search(name)
    if m is not None:
        layer = int(m.group(1))
        return {next((r for r, (s, e) in enumerate(ranges) if s <= layer < e), last)}
    if _EMBED.search(name):
        return {0, last} if tied else {0}
    return {last}


def stage_shards(
    weight_map: Mapping[str, str], num_layers: int, pp: int, *, tied: bool = False,
    partition: str | None = None,
) -> list[set[str]]:  # fmt: skip
    """For each stage, the shard files holding its tensors."""
    ranges = layer_ranges(num_layers, pp, partition)
    shards: list[set[str]] = [set() for _ in range(pp)]
    for tensor, shard in weight_map.items():
        for r in tensor_stages(tensor, ranges, tied):
            shards[r].add(shard)
    return shards


def is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES)


def files_for_stages(
    folder: Path, names: Iterable[str], pp: int, stages: Iterable[int]
) -> set[str]:
    """Files of `names` (the checkpoint's) that a node running `stages` of `pp` must hold.

    Reads config.json (num_hidden_layers, tie_word_embeddings) and the index from `folder`.
    Without an index, or with pp 1, that is every file.
    """
    names = set(names)
    index = folder / INDEX
    if pp <= 1 or not index.is_file():
        return names
    config = json.loads((folder / "config.json").read_text())
    config = config.get("text_config", config)
    weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    per_stage = stage_shards(
        weight_map,
        int(config["num_hidden_layers"]),
        pp,
        tied=bool(config.get("tie_word_embeddings", False)),
        partition=os.environ.get("VLLM_PP_LAYER_PARTITION") or None,
    )
    wanted = set().union(*(per_stage[s] for s in stages))
    return {n for n in names if not is_weight_file(n) or n in wanted}
