"""The gateway's /metrics as the autoscaler's signals: per model, the TTFT and ITL histograms
(their p90 over a window is the difference of two scrapes), the requests held for a replica
(`deepfleet_waiting_for_replica{model}`: a model at zero starts from it), and the admission
queue. Pure: text in, numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

TTFT = "deepfleet_time_to_first_token_seconds"
ITL = "deepfleet_inter_token_latency_seconds"
QUEUE = "deepfleet_admission_queue_depth"
WAITING = "deepfleet_waiting_for_replica"
TOKENS = {"deepfleet_prompt_tokens_total": "prompt", "deepfleet_output_tokens_total": "output"}
Buckets = dict[float, float]  # upper bound -> cumulative count


@dataclass(frozen=True)
class Scrape:
    at: float
    ttft: dict[str, Buckets]
    itl: dict[str, Buckets]
    queue: int
    waiting: dict[str, int]
    """Requests the gateway holds for a replica of the model to become ready."""
    prompt: dict[str, float]
    output: dict[str, float]
    """Prompt and output tokens through the gateway so far (counters), per model."""


def parse_gateway(text: str, at: float) -> Scrape:
    ttft: dict[str, Buckets] = {}
    itl: dict[str, Buckets] = {}
    queue = 0.0
    waiting: dict[str, int] = {}
    tokens: dict[str, dict[str, float]] = {"prompt": {}, "output": {}}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == QUEUE:
                queue += s.value
            elif s.name in TOKENS:
                into_tokens = tokens[TOKENS[s.name]]
                model = s.labels.get("model", "")
                into_tokens[model] = into_tokens.get(model, 0.0) + s.value
            elif s.name == WAITING:
                model = s.labels.get("model", "")
                waiting[model] = waiting.get(model, 0) + int(s.value)
            elif s.name.endswith("_bucket") and family.name in (TTFT, ITL):
                into = ttft if family.name == TTFT else itl
                model = s.labels.get("model", "")
                into.setdefault(model, {})[float(s.labels["le"])] = s.value
    return Scrape(at, ttft, itl, int(queue), waiting, tokens["prompt"], tokens["output"])


def p90(old: Buckets | None, new: Buckets | None) -> tuple[float | None, float]:
    """p90 (a bucket's upper bound; the last finite one for +Inf) of the samples between
    two scrapes of a histogram, and how many samples there were."""
    if not new:
        return None, 0.0
    old = old or {}
    bounds = sorted(new)
    delta = [new[b] - old.get(b, 0.0) for b in bounds]
    total = delta[-1]
    if total <= 0:
        return None, 0.0
    for bound, count in zip(bounds, delta, strict=True):
        if count >= 0.9 * total:
            finite = [b for b in bounds if not math.isinf(b)]
            return (bound if not math.isinf(bound) else finite[-1]), total
    return None, total
