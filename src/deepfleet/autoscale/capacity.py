"""How many requests per second one replica serves within an ITL target: the number the
autoscaler's predictive sizing divides the arrival rate by.

From a step-time model (the simulator's LatencyProfile, or the planner's roofline), for a
request mix with mean `input_tokens` and `output_tokens`, at `rate` requests/s per replica:

    prefill share   rho = rate x prefill_s(input_tokens)
    decode batch    b   = rate x output_tokens x itl                  (Little's law)
    ITL             itl = decode_s(b, b x (input_tokens + output_tokens / 2)) / (1 - rho)

solved for itl by iteration at each rate; the capacity is the highest rate (bisection) whose
ITL stays within the target, whose batch fits `max_seqs`, and whose KV cache (b x (input +
output) tokens) fits `kv_tokens`. TTFT is not in the formula: below that rate a replica has
room for every prompt on arrival, and the autoscaler's `utilization` keeps the headroom.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _itl(
    rate: float,
    decode_s: Callable[[int, int], float],
    prefill_s: Callable[[int], float],
    input_tokens: float,
    output_tokens: float,
) -> tuple[float, float]:
    """(ITL, batch) at `rate`; ITL infinite when prefill alone fills the replica."""
    rho = rate * prefill_s(math.ceil(input_tokens))
    if rho >= 0.95:
        return math.inf, math.inf
    context = input_tokens + output_tokens / 2
    itl = decode_s(1, math.ceil(context)) / (1 - rho)
    batch = 1.0
    for _ in range(60):
        batch = max(1.0, rate * output_tokens * itl)
        b = math.ceil(batch)
        new = decode_s(b, math.ceil(b * context)) / (1 - rho)
        if abs(new - itl) < 1e-6 * itl:
            break
        itl = 0.5 * itl + 0.5 * new
    return itl, batch


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
    tokens in all; `prefill_s(tokens)`: the prefill of a prompt.
    """

    def fits(rate: float) -> bool:
        itl, batch = _itl(rate, decode_s, prefill_s, input_tokens, output_tokens)
        return (
            itl <= itl_s
            and batch <= max_seqs
            and batch * (input_tokens + output_tokens) <= kv_tokens
        )

    low, high = 0.0, 1.0
    while fits(high) and high < 1e6:
        low, high = high, high * 2
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low
