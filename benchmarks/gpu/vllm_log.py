"""What vLLM's startup log says about memory and time (vLLM 0.26; the same lines in 0.32).

Lines read (vLLM's own format strings):
- `Model loading took 12.91 GiB memory and 3.06 seconds` (older: `took 12.9100 GiB and ...`)
- `Available KV cache memory: 114.36 GiB`
- `GPU KV cache size: 2,141,248 tokens` and `Maximum concurrency for 4,096 tokens per
  request: 522.77x` (one line or two, by version)
- `The current --gpu-memory-utilization=0.9200 is equivalent to
  --gpu-memory-utilization=0.9141 without CUDA graph memory profiling` (the estimate that
  was taken from the KV budget: the difference x total memory)
- `Graph capturing finished in 4 secs, took 0.89 GiB`
- `torch.compile took 24.10 s in total` (older: `takes`)
- `init engine (profile, create kv cache, warmup model) took 144.33 seconds`
- `Using FLASH_ATTN attention backend out of potential backends: [...]`
- `Actual usage is 2.86 GiB for weight, 0.54 GiB for peak activation, 0.22 GiB for non-torch
  memory, and 0.0 GiB for CUDAGraph memory.` (0.26, seen on the H200 2026-11-29)
- `Initializing a V1 LLM engine (v0.26.0) with config: ...` (the version, when the API
  server's own line is not there)
With data-parallel attention every rank's engine core (`(EngineCore_DP3 pid=...)`) logs its own
KV cache size: `kv_tokens_by_rank` keeps each rank's first line.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_NUM = r"([\d][\d,]*(?:\.\d+)?)"
PATTERNS: dict[str, re.Pattern[str]] = {
    "weights_gib": re.compile(r"Model loading took " + _NUM + r" ?GiB"),
    "weights_load_s": re.compile(r"Model loading took .*? and " + _NUM + r" ?s"),
    "available_kv_gib": re.compile(r"Available KV cache memory: " + _NUM + r" ?GiB"),
    "kv_tokens": re.compile(r"KV cache size: " + _NUM + r" tokens"),
    "max_concurrency": re.compile(r"Maximum concurrency for [\d,]+ tokens per request: " + _NUM),
    "graph_equiv_util": re.compile(
        r"is equivalent to --gpu-memory-utilization=" + _NUM + " without CUDA graph"
    ),
    "graph_capture_gib": re.compile(r"Graph capturing finished in [\d.]+ secs?, took " + _NUM),
    "graph_capture_s": re.compile(r"Graph capturing finished in " + _NUM + " sec"),
    "torch_compile_s": re.compile(r"torch\.compile t(?:akes|ook) " + _NUM + r" s in total"),
    "init_engine_s": re.compile(
        r"init engine \(profile, create kv cache, warmup model\) took " + _NUM
    ),
    "weights_loading_s": re.compile(r"Loading weights took " + _NUM + " sec"),
    "activation_gib": re.compile(r"Actual usage is .*?, " + _NUM + r" ?GiB for peak activation"),
    "non_torch_gib": re.compile(r"Actual usage is .*?, " + _NUM + r" ?GiB for non-torch memory"),
    "cudagraph_gib": re.compile(r"Actual usage is .*? " + _NUM + r" ?GiB for CUDAGraph memory"),
}
TEXT_PATTERNS: dict[str, re.Pattern[str]] = {
    "attention_backend": re.compile(r"Using (\S+) attention backend"),
    "attention_backend_old": re.compile(r"Using (\S+) backend\.?$", re.MULTILINE),
    "vllm_version": re.compile(r"vLLM API server version (\S+)"),
    "vllm_version_engine": re.compile(r"Initializing a V1 LLM engine \(v([^)\s]+)\)"),
}
RANK_KV = re.compile(r"EngineCore_DP(\d+)\b.*?KV cache size: " + _NUM + r" tokens")
FAILURES = (
    "Traceback (most recent call last)",
    "CUDA out of memory",
    "torch.OutOfMemoryError",
    "No available memory for the cache blocks",
    "Engine core initialization failed",
    "RuntimeError:",
    "ValueError:",
)


@dataclass
class StartupFacts:
    weights_gib: float | None = None
    weights_load_s: float | None = None
    weights_loading_s: float | None = None
    activation_gib: float | None = None
    non_torch_gib: float | None = None
    cudagraph_gib: float | None = None
    available_kv_gib: float | None = None
    kv_tokens: int | None = None
    max_concurrency: float | None = None
    graph_equiv_util: float | None = None
    graph_capture_gib: float | None = None
    graph_capture_s: float | None = None
    torch_compile_s: float | None = None
    init_engine_s: float | None = None
    attention_backend: str | None = None
    vllm_version: str | None = None
    kv_tokens_by_rank: dict[int, int] = field(default_factory=dict)
    moe_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(raw: str) -> float:
    return float(raw.replace(",", ""))


def parse(text: str) -> StartupFacts:
    """Facts from a startup log; the first match of each line wins (the API server and the
    engine core may both log some)."""
    facts = StartupFacts()
    for name, pattern in PATTERNS.items():
        found = pattern.search(text)
        if found:
            value = _value(found.group(1))
            setattr(facts, name, int(value) if name == "kv_tokens" else value)
    for name, pattern in TEXT_PATTERNS.items():
        found = pattern.search(text)
        if found:
            key = name.removesuffix("_old").removesuffix("_engine")
            if getattr(facts, key) is None:
                setattr(facts, key, found.group(1).rstrip(".,"))
    lines = text.splitlines()
    for found in RANK_KV.finditer(text):
        facts.kv_tokens_by_rank.setdefault(int(found.group(1)), int(_value(found.group(2))))
    facts.moe_lines = [ln[-240:] for ln in lines if "MoE" in ln or "moe" in ln][:8]
    facts.warnings = [ln[-240:] for ln in lines if " WARNING " in ln][:20]
    facts.failure = failure(text)
    return facts


def failure(text: str) -> str | None:
    """The first line that shows the engine failed to start, or None."""
    for line in text.splitlines():
        if any(mark in line for mark in FAILURES):
            return line[-400:]
    return None


def graph_estimate_bytes(facts: StartupFacts, utilization: float, total_bytes: int) -> int | None:
    """CUDA graph memory vLLM took from the KV budget (its profiling estimate)."""
    if facts.graph_equiv_util is None:
        return None
    return round((utilization - facts.graph_equiv_util) * total_bytes)
