"""How many requests per second one replica serves within an ITL target: the number the
autoscaler's predictive sizing divides the arrival rate by.

From a step-time model (the simulator's LatencyProfile, or the planner's roofline), for a
request mix with mean `input_tokens` (n) and `output_tokens` (o). A replica decoding a batch of
b sequences takes `d(b) = decode_s(b, b x (n + o / 2))` a step; prefill takes `P =
prefill_s(n)` per request and stretches the steps by the share of time it holds, rho:

    served    rate = x / (1 + x P),   x = b / (o d(b))    (Little's law, with rho = rate P)
    ITL       itl  = d(b) / (1 - rho)

The capacity is the highest such rate over batches b whose ITL is within the target, b within
`max_seqs` and whose KV cache (b x (n + o) tokens) fits `kv_tokens`. Scanning b, rather than
iterating on the rate, stays right at saturation, where the step time grows as fast as the
batch (a host-bound engine) and no fixed point exists. TTFT is not in the formula: below that
rate a prompt is admitted on arrival, and the autoscaler's `utilization` keeps the headroom.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def replica_capacity(
    decode_s: Callable[[int, int], float],
    prefill_s: Callable[[int], float],
    *,
    input_tokens: float,
    output_tokens: float,
    itl_s: float,
    max_seqs: int,
    kv_tokens: int,
) -> float:
    """Requests/s one replica serves with its mean ITL within `itl_s` (see the module doc).

    `decode_s(seqs, context)`: one decode step of `seqs` sequences reading `context` KV
    tokens in all; `prefill_s(tokens)`: the prefill of one prompt.
    """
    per_seq = input_tokens + output_tokens
    fits = min(max_seqs, int(kv_tokens // per_seq)) if per_seq > 0 else max_seqs
    prefill = prefill_s(math.ceil(input_tokens))
    context = input_tokens + output_tokens / 2
    best = 0.0
    for b in range(1, fits + 1):
        step = decode_s(b, math.ceil(b * context))
        x = b / (output_tokens * step)
        rate = x / (1 + x * prefill)
        if step / (1 - rate * prefill) > itl_s:
            break  # the step time only grows with the batch
        best = max(best, rate)
    return best
