"""Benchmark workloads, built by name: shared-prefix, multi-turn, synthetic, trace:FILE."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

from deepfleet.bench.workloads import multi_turn, shared_prefix, synthetic, trace
from deepfleet.bench.workloads.base import Builder, Workload

BUILDERS: dict[str, Builder] = {
    "shared-prefix": shared_prefix.build,
    "multi-turn": multi_turn.build,
    "synthetic": synthetic.build,
}


def build_workload(
    name: str, requests: int, params: Mapping[str, str] | None = None, seed: int = 0
) -> Workload:
    """Build a workload by name (`trace:FILE` replays a Mooncake trace file)."""
    params = params or {}
    if name.startswith("trace:"):
        return trace.build_from(Path(name.removeprefix("trace:")), requests, params)
    if name not in BUILDERS:
        known = ", ".join([*BUILDERS, "trace:FILE"])
        raise ValueError(f"unknown workload {name!r}; known: {known}")
    return BUILDERS[name](requests, params, random.Random(seed))


__all__ = ["BUILDERS", "Workload", "build_workload"]
