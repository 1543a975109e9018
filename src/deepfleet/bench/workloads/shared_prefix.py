"""`shared-prefix`: SGLang's generated-shared-prefix dataset (bench_serving.py).

groups x prompts_per_group requests; the prompts of a group share one system prompt of
system_len tokens, each adds a question of question_len tokens and asks for output_len tokens.
SGLang's defaults: 64 x 16 x 2048 x 128 x 256. The requests are shuffled; `--requests N` keeps
the first N (N=0 keeps them all).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from deepfleet.bench.text import tagged
from deepfleet.bench.workloads.base import Workload, as_chains, chat, parse_options


@dataclass(frozen=True)
class SharedPrefixOptions:
    groups: int = 64
    prompts_per_group: int = 16
    system_len: int = 2048
    question_len: int = 128
    output_len: int = 256


def build(requests: int, params: Mapping[str, str], rng: random.Random) -> Workload:
    o = parse_options(SharedPrefixOptions, params)
    specs = []
    for group in range(o.groups):
        system = tagged(f"system prompt {group}", o.system_len, rng)
        for prompt in range(o.prompts_per_group):
            question = tagged(f"question {prompt}", o.question_len, rng)
            specs.append([chat(system, question, o.output_len)])
    rng.shuffle(specs)
    if requests > 0:
        specs = specs[:requests]
    return Workload("shared-prefix", as_chains(specs))
