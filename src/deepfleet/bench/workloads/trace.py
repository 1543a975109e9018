"""`trace:FILE`: replay a Mooncake trace (github.com/kvcache-ai/Mooncake, FAST'25 traces).

Each JSONL line: {"timestamp": ms, "input_length": n, "output_length": m, "hash_ids": [...]}.
Each hash id stands for a 512-token block; equal ids are equal text, so the trace's prefix
sharing is reproduced. Requests start at their timestamps (divided by `time_scale`) unless a
rate is given. Options: time_scale (1.0), max_input (0 = no cap; longer prompts are cut).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deepfleet.bench.client import RequestSpec
from deepfleet.bench.text import words
from deepfleet.bench.workloads.base import Workload, as_chains, parse_options

BLOCK_TOKENS = 512


@dataclass(frozen=True)
class TraceOptions:
    time_scale: float = 1.0
    max_input: int = 0


@dataclass(frozen=True, slots=True)
class TraceRecord:
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def read_trace(path: Path) -> list[TraceRecord]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            records.append(
                TraceRecord(
                    float(raw["timestamp"]),
                    int(raw["input_length"]),
                    int(raw["output_length"]),
                    tuple(int(h) for h in raw["hash_ids"]),
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a Mooncake trace line ({exc})") from exc
    return records


def prompt_for(record: TraceRecord, block_text: dict[int, str]) -> str:
    parts = []
    for index, hash_id in enumerate(record.hash_ids):
        if hash_id not in block_text:
            block_text[hash_id] = words(BLOCK_TOKENS - 1, random.Random(hash_id))
        block = f"{hash_id} {block_text[hash_id]}"
        last = index == len(record.hash_ids) - 1
        tail = record.input_length - BLOCK_TOKENS * index
        parts.append(" ".join(block.split()[:tail]) if last else block)
    return " ".join(parts)


def build_from(path: Path, requests: int, params: Mapping[str, str]) -> Workload:
    o = parse_options(TraceOptions, params)
    records = read_trace(path)
    if requests > 0:
        records = records[:requests]
    cache: dict[int, str] = {}
    specs = []
    for record in records:
        prompt = prompt_for(record, cache)
        if o.max_input:
            prompt = " ".join(prompt.split()[: o.max_input])
        specs.append([RequestSpec(prompt=prompt, max_tokens=max(1, record.output_length))])
    start = records[0].timestamp_ms if records else 0.0
    schedule = tuple((r.timestamp_ms - start) / 1000.0 / o.time_scale for r in records)
    return Workload(f"trace:{path.name}", as_chains(specs), schedule)
