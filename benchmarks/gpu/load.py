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

`hard_stop` (long outputs, issue 12's 1K-token decode runs): at the stop time the streams are
cut instead of drained; a request still in flight keeps the chunks it got (one token each,
vLLM's default stream interval), and the closed connections make the engine abort it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import aiohttp

from deepfleet.bench.client import OpenAIClient, RequestSpec, build_payload
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


class _Live:
    """One request's chunk times as they arrive, readable when it is cut off."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.times: list[float] = []
        self.tokens = -1
        self.error = ""

    def record(self) -> Record | None:
        """None for a request cut before its first token (neither a result nor an error)."""
        if not self.times:
            return (False, self.error, self.started, 0.0, (), 0) if self.error else None
        first = self.times[0] - self.started
        gaps = tuple(b - a for a, b in zip(self.times, self.times[1:], strict=False))
        tokens = self.tokens if self.tokens >= 0 else len(self.times)
        return (not self.error, self.error, self.started, first, gaps, tokens)


async def _send_live(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                     live: _Live) -> None:  # fmt: skip
    try:
        async with session.post(url + "/v1/completions", json=body) as r:
            if r.status != 200:
                live.error = f"HTTP {r.status}: {(await r.text())[:200]}"
                return
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                    continue
                chunk = json.loads(line[5:])
                if chunk.get("choices"):
                    live.times.append(time.perf_counter())
                if chunk.get("usage"):
                    live.tokens = int(chunk["usage"].get("completion_tokens") or 0)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        live.error = f"{type(exc).__name__}: {exc}"[:200]


async def _cut_streams(
    url: str, model: str, spec: RequestSpec, streams: int, go_at: float, stop_at: float
) -> list[Record]:
    """Closed loop until `stop_at`, then every stream is cut (hard_stop)."""
    rng = random.Random()
    length = len(spec.extra.get("prompt") or ())
    lives: list[_Live] = []
    await asyncio.sleep(max(0.0, go_at - time.perf_counter()))
    connector = aiohttp.TCPConnector(limit=streams + 8)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def stream() -> None:
            while time.perf_counter() < stop_at:
                one = spec
                if length:
                    one = replace(spec, extra={**spec.extra, "prompt": random_prompt(rng, length)})
                live = _Live()
                lives.append(live)
                await _send_live(session, url, build_payload(model, one), live)

        tasks = [asyncio.create_task(stream()) for _ in range(streams)]
        await asyncio.wait(tasks, timeout=max(0.0, stop_at - time.perf_counter()))
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return [r for r in (live.record() for live in lives) if r is not None]


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
    url: str, model: str, spec: dict[str, Any], streams: int, go_at: float, stop_at: float,
    hard_stop: bool = False,
) -> list[Record]:  # fmt: skip
    run = _cut_streams if hard_stop else _streams
    return asyncio.run(run(url, model, RequestSpec(**spec), streams, go_at, stop_at))


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
        *,
        hard_stop: bool = False,
        go_at: float | None = None,
    ) -> dict[str, Any]:
        """One run; `go_at` (time.perf_counter) when the streams start, default in 0.5 s."""
        n = min(self.procs, max(1, math.ceil(concurrency / STREAMS_PER_PROC)))
        shares = [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]
        go_at = go_at if go_at is not None else time.perf_counter() + 0.5
        t0, t1 = go_at + warmup_s, go_at + warmup_s + window_s
        raw = {
            "prompt": spec.prompt, "max_tokens": spec.max_tokens, "ignore_eos": spec.ignore_eos,
            "extra": dict(spec.extra),
        }  # fmt: skip
        futures = [
            self.pool.submit(_proc_main, url, model, raw, k, go_at, t1, hard_stop)
            for k in shares
            if k
        ]
        records = [r for f in futures for r in f.result()]
        return summarize(records, t0, t1) | {"concurrency": concurrency, "procs": n}


def summarize(records: Sequence[Record], t0: float, t1: float) -> dict[str, Any]:
    """Window numbers of one run (see the module docstring)."""
    tokens = 0.0
    ttft: list[float] = []
    itl: list[float] = []
    # Long outputs (cut runs): few requests start inside the window, so also every gap whose
    # chunk arrived in it, and the TTFT of every request (the ramp's prefill burst).
    itl_window: list[float] = []
    ttft_all: list[float] = []
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
        ttft_all.append(first)
        for gap in gaps:
            at += gap
            inside = t0 <= at < t1
            tokens += share * inside
            if inside:
                itl_window.append(gap)
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
        "itl_window_p50_ms": round(percentile(itl_window, 50) * ms, 3),
        "itl_window_p99_ms": round(percentile(itl_window, 99) * ms, 3),
        "ttft_all_p50_ms": round(percentile(ttft_all, 50) * ms, 3),
        "ttft_all_p99_ms": round(percentile(ttft_all, 99) * ms, 3),
    }
