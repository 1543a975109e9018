"""GPU scenario `offload` (issue 7, level 2): does `kv_cache: {offload: cpu}` avoid recomputing
prefixes the GPU's KV cache has evicted?

Two engines of one model, started together with the same small GPU KV cache: `plain` without
offloading, `offload` with the `--kv-transfer-config` deepfleet generates for
`kv_cache: {offload: cpu, cpu_gib: N}` (vLLM's OffloadingConnector). With two GPUs each engine
has its own; with one they share it. Workload, the same on both, one request at a time: pass 1
sends D distinct documents of L tokens (D x L well above the GPU cache, well below the CPU
one); pass 2 sends the same documents again in the same order, so on a GPU-only engine each
was evicted (LRU) before it comes back. Pass 2's TTFT and the engines' prefix-cache counters
(GPU and external, i.e. loaded from the CPU tier) tell the difference.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from typing import Any

from benchmarks.gpu import vllm_log
from benchmarks.gpu.engines import EngineSpec, metrics_text, start_engine, wait_ready
from benchmarks.gpu.load import completion_spec, random_prompt
from benchmarks.gpu.procs import log
from benchmarks.gpu.scenarios import Run
from benchmarks.gpu.served import gpu_count

from deepfleet.bench.client import OpenAIClient
from deepfleet.catalog.hardware import GiB
from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines.vllm import kv_transfer_config
from deepfleet.fleet.ports import free_port

# Counter families worth keeping: GPU prefix cache, external (connector) hits, offload I/O.
COUNTER = re.compile(r"^(vllm:[a-z_]*(prefix_cache|external|offload|kv_transfer)[a-z_]*)")


def counters(text: str) -> dict[str, float]:
    """Every counter of the families above, summed over label sets (histograms' _sum and
    _count included, buckets left out)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = COUNTER.match(line)
        if not m or "_bucket" in m.group(1) or line.startswith("#"):
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(line.rsplit(" ", 1)[-1])
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 1) for k, v in after.items()}


async def _pass(url: str, model: str, docs: list[list[int]]) -> list[float]:
    """TTFT in ms of each document, sent one after another."""
    out = []
    async with OpenAIClient(url) as client:
        for doc in docs:
            result = await client.send(model, completion_spec(doc, 2))
            if not result.ok:
                raise RuntimeError(f"{url}: {result.error}")
            out.append(round(result.ttft_s * 1000, 2))
    return out


def _stats(ttfts: list[float]) -> dict[str, float]:
    ordered = sorted(ttfts)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


async def offload(
    run: Run,
    model: str,
    gpu_kv_gib: float,
    cpu_gib: float,
    docs: int,
    doc_len: int,
    start_cap_s: float,
) -> None:
    results = run.results("offload")
    gpus = gpu_count() or 1
    spec = KvCacheSpec(offload="cpu", cpu_gib=cpu_gib)
    transfer = kv_transfer_config(spec)
    engines = {
        "plain": {},
        "offload": {"kv_transfer_config": transfer},
    }
    specs = {
        name: EngineSpec(
            model, str(run.models / model), doc_len + 64,
            0.92 if gpus >= 2 else 0.42, kv_cache_memory_bytes=int(gpu_kv_gib * GiB),
            engine_args=args, fake=run.fake, port=free_port(),
            env={"CUDA_VISIBLE_DEVICES": str(i)} if gpus >= 2 else {},
        )
        for i, (name, args) in enumerate(engines.items())
    }  # fmt: skip
    results.put("settings", {
        "model": model, "gpus": gpus, "gpu_kv_gib": gpu_kv_gib, "cpu_gib": cpu_gib,
        "docs": docs, "doc_len": doc_len, "kv_transfer_config": transfer,
        "devices": {n: s.env.get("CUDA_VISIBLE_DEVICES", "shared") for n, s in specs.items()},
    })  # fmt: skip
    procs = {name: start_engine(run.procs, s, f"engine-{name}") for name, s in specs.items()}
    cap = min(start_cap_s, run.budget.left() - 60)
    t0 = time.monotonic()
    ready = await asyncio.gather(
        *(wait_ready(procs[n], s.url, cap) for n, s in specs.items())
    )  # fmt: skip
    results.put("ready_s", dict(zip(specs, ready, strict=True)))
    results.put("startup", {n: vllm_log.parse(p.text()).as_dict() for n, p in procs.items()})
    log(f"engines ready in {time.monotonic() - t0:.0f} s")
    rng = random.Random(7)
    documents = [random_prompt(rng, doc_len) for _ in range(docs)]
    warm = [random_prompt(rng, 256) for _ in range(4)]

    async def one(name: str) -> dict[str, Any]:
        url = specs[name].url
        await _pass(url, model, warm)  # kernels, not caches: other tokens
        c0 = counters(await metrics_text(url))
        first = await _pass(url, model, documents)
        c1 = counters(await metrics_text(url))
        second = await _pass(url, model, documents)
        c2 = counters(await metrics_text(url))
        row = {
            "pass1": _stats(first), "pass2": _stats(second),
            "pass1_counters": delta(c1, c0), "pass2_counters": delta(c2, c1),
            "pass2_ttft_ms": second,
        }  # fmt: skip
        log(f"{name}: pass1 {row['pass1']} pass2 {row['pass2']}")
        return row

    # Side by side on their own GPUs; one after the other when they share one.
    names = list(specs)
    if gpus >= 2:
        rows = await asyncio.gather(*(one(n) for n in names))
    else:
        rows = [await one(n) for n in names]
    runs = dict(zip(names, rows, strict=True))
    results.put("runs", runs)
    plain, off = runs["plain"]["pass2"], runs["offload"]["pass2"]
    results.put("summary", {
        "pass2_ttft_p50_ms": {"plain": plain["p50_ms"], "offload": off["p50_ms"]},
        "pass2_ttft_p50_ratio": round(off["p50_ms"] / max(plain["p50_ms"], 1e-9), 3),
        "pass1_ttft_p50_ms": {n: r["pass1"]["p50_ms"] for n, r in runs.items()},
    })  # fmt: skip
    results.put("complete", True)
