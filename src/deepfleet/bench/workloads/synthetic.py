"""`synthetic`: independent requests with input and output lengths drawn from a distribution.

Options: input_len (512), output_len (128), dist (uniform | fixed | exponential),
range_ratio (0.5: uniform lengths in [len*(1-r), len*(1+r)], as vLLM's random dataset),
api (chat | completions).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from deepfleet.bench.client import RequestSpec
from deepfleet.bench.text import tagged
from deepfleet.bench.workloads.base import Workload, as_chains, chat, parse_options


@dataclass(frozen=True)
class SyntheticOptions:
    input_len: int = 512
    output_len: int = 128
    dist: str = "uniform"
    range_ratio: float = 0.5
    api: str = "chat"


def draw(mean: int, options: SyntheticOptions, rng: random.Random) -> int:
    if options.dist == "fixed":
        return mean
    if options.dist == "uniform":
        low = round(mean * (1 - options.range_ratio))
        high = round(mean * (1 + options.range_ratio))
        return max(1, rng.randint(low, high))
    if options.dist == "exponential":
        return max(1, round(rng.expovariate(1 / mean)))
    raise ValueError(f"dist={options.dist!r}: expected uniform, fixed or exponential")


def build(requests: int, params: Mapping[str, str], rng: random.Random) -> Workload:
    options = parse_options(SyntheticOptions, params)
    specs = []
    for index in range(requests):
        text = tagged(f"request {index}", draw(options.input_len, options, rng), rng)
        out = draw(options.output_len, options, rng)
        if options.api == "completions":
            specs.append([RequestSpec(prompt=text, max_tokens=out)])
        else:
            specs.append([chat(None, text, out)])
    return Workload("synthetic", as_chains(specs))
