"""Closed-loop streaming load for a fixed time, spread over client processes.

Each stream sends one request after another through deepfleet's bench client (vLLM's timing
definitions: TTFT at the first choice chunk, ITL between chunks, tokens from the usage chunk)
until the stop time; requests in flight then finish. At GPU rates (~13,000 chunks/s at 256
streams) one Python client would spend most of a core parsing chunks, so streams are split
over processes of at most STREAMS_PER_PROC each (time.perf_counter is CLOCK_MONOTONIC on
Linux, the same clock in every process).

Counted in the window [start + warmup, stop): output tokens whose chunk arrived in it (a
chunk carrying several tokens counts its share of the request's usage), and TTFT/ITL of the
requests sent in it.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from deepfleet.bench.client import OpenAIClient, RequestSpec
from deepfleet.bench.stats import percentile

STREAMS_PER_PROC = 64
MAX_PROCS = 4

# (ok, error, started_at, ttft_s, itl_s, output_tokens)
Record = tuple[bool, str, float, float, tuple[float, ...], int]


def completion_spec(prompt_ids: Sequence[int], max_tokens: int) -> RequestSpec:
    """A completion whose prompt is exactly these token ids (vLLM takes a list of ints)."""
    return RequestSpec(
        prompt="", max_tokens=max_tokens, ignore_eos=True, extra={"prompt": list(prompt_ids)}
    )


def random_prompt(rng: random.Random, length: int) -> list[int]:
    """Token ids no two requests share (a prefix-cache hit would shorten the prefill)."""
    return [rng.randrange(1000, 40000) for _ in range(length)]


async def _streams(
    url: str, model: str, spec: RequestSpec, streams: int, go_at: float, stop_at: float
) -> list[Record]:
    out: list[Record] = []
    rng = random.Random()
    length = len(spec.extra.get("prompt") or ())
    await asyncio.sleep(max(0.0, go_at - time.perf_counter()))
    async with OpenAIClient(url, max_connections=streams + 8, timeout_s=300) as client:

        async def stream() -> None:
            while time.perf_counter() < stop_at:
                one = spec
                if length:
                    one = replace(spec, extra={**spec.extra, "prompt": random_prompt(rng, length)})
                r = await client.send(model, one)
                out.append((r.ok, r.error[:200], r.started_at, r.ttft_s, r.itl_s, r.output_tokens))

        await asyncio.gather(*(stream() for _ in range(streams)))
    return out


def _proc_main(
    url: str, model: str, spec: dict[str, Any], streams: int, go_at: float, stop_at: float
) -> list[Record]:
    return asyncio.run(_streams(url, model, RequestSpec(**spec), streams, go_at, stop_at))


def _noop() -> int:
    return 0


class LoadRunner:
    """A pool of client processes kept for the whole scenario (their imports cost ~1 s)."""

    def __init__(self, procs: int = MAX_PROCS) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(max_workers=procs, mp_context=ctx)
        for f in [self.pool.submit(_noop) for _ in range(procs)]:
            f.result()
        self.procs = procs

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)

    def run(
        self,
        url: str,
        model: str,
        spec: RequestSpec,
        concurrency: int,
        warmup_s: float,
        window_s: float,
    ) -> dict[str, Any]:
        n = min(self.procs, max(1, math.ceil(concurrency / STREAMS_PER_PROC)))
        shares = [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]
        go_at = time.perf_counter() + 0.5
        t0, t1 = go_at + warmup_s, go_at + warmup_s + window_s
        raw = {
            "prompt": spec.prompt, "max_tokens": spec.max_tokens, "ignore_eos": spec.ignore_eos,
            "extra": dict(spec.extra),
        }  # fmt: skip
        futures = [self.pool.submit(_proc_main, url, model, raw, k, go_at, t1) for k in shares if k]
        records = [r for f in futures for r in f.result()]
        return summarize(records, t0, t1) | {"concurrency": concurrency, "procs": n}


def summarize(records: Sequence[Record], t0: float, t1: float) -> dict[str, Any]:
    """Window numbers of one run (see the module docstring)."""
    tokens = 0.0
    ttft: list[float] = []
    itl: list[float] = []
    errors: dict[str, int] = {}
    sent = ok = 0
    for good, error, started, first, gaps, out_tokens in records:
        in_window = t0 <= started < t1
        sent += in_window
        if not good:
            if in_window:
                errors[error] = errors.get(error, 0) + 1
            continue
        chunks = len(gaps) + 1
        share = out_tokens / chunks if out_tokens > 0 else 1.0
        at = started + first
        tokens += share * (t0 <= at < t1)
        for gap in gaps:
            at += gap
            tokens += share * (t0 <= at < t1)
        if in_window:
            ok += 1
            ttft.append(first)
            itl.extend(gaps)
    ms = 1000.0
    return {
        "window_s": round(t1 - t0, 3),
        "requests_sent": sent,
        "requests_ok": ok,
        "errors": sum(errors.values()),
        "error_kinds": dict(list(errors.items())[:5]),
        "output_tok_s": round(tokens / (t1 - t0), 1),
        "ttft_p50_ms": round(percentile(ttft, 50) * ms, 3),
        "ttft_p99_ms": round(percentile(ttft, 99) * ms, 3),
        "itl_p50_ms": round(percentile(itl, 50) * ms, 3),
        "itl_p99_ms": round(percentile(itl, 99) * ms, 3),
    }
