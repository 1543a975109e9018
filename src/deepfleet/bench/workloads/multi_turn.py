"""`multi-turn`: production-stack's multi-round QA (benchmarks/multi-round-qa).

Each user has a shared system prompt (system_len tokens) and a private history (history_len
tokens), then asks `rounds` questions of question_len tokens; each answer (answer_len tokens) is
appended to the history before the next question, so the prompt grows every round. A user's rounds
run one after another; users run in parallel. Users default to ceil(requests / rounds).
The appended answers are generated text of answer_len words, not the engine's replies, so the
prompts are the same on every target.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from deepfleet.bench.client import RequestSpec
from deepfleet.bench.text import tagged, words
from deepfleet.bench.workloads.base import Workload, as_chains, parse_options


@dataclass(frozen=True)
class MultiTurnOptions:
    users: int = 0
    rounds: int = 5
    system_len: int = 1000
    history_len: int = 2000
    question_len: int = 50
    answer_len: int = 100


def build(requests: int, params: Mapping[str, str], rng: random.Random) -> Workload:
    o = parse_options(MultiTurnOptions, params)
    users = o.users or max(1, math.ceil(requests / o.rounds))
    system = tagged("shared system prompt", o.system_len, rng)
    chains = []
    for user in range(users):
        history = tagged(f"user {user} history", o.history_len, rng)
        messages = [{"role": "system", "content": f"{system}\n{history}"}]
        chain = []
        for turn in range(o.rounds):
            messages.append({"role": "user", "content": tagged(f"q{turn}", o.question_len, rng)})
            session = f"user-{user}"
            chain.append(
                RequestSpec(messages=tuple(messages), max_tokens=o.answer_len, session=session)
            )
            messages = [*messages, {"role": "assistant", "content": words(o.answer_len, rng)}]
        chains.append(chain)
    if requests > 0:
        chains = _trim(chains, requests)
    return Workload("multi-turn", as_chains(chains))


def _trim(chains: list[list[RequestSpec]], requests: int) -> list[list[RequestSpec]]:
    kept: list[list[RequestSpec]] = []
    left = requests
    for chain in chains:
        if left <= 0:
            break
        kept.append(chain[:left])
        left -= len(kept[-1])
    return kept
