"""The startup-log parser on vLLM 0.26's lines (numbers as measured on the lent H200)."""

from __future__ import annotations

import pytest
from benchmarks.gpu import vllm_log

E = "(EngineCore_DP0 pid=4242) INFO 11-28 10:01:02"
LINES = (
    "(APIServer pid=4200) INFO 11-28 10:00:01 [api_server.py:1880] vLLM API server version 0.26.0",
    f"{E} [cuda.py:507] Using FLASH_ATTN attention backend out of potential backends: ['X'].",
    f"{E} [default_loader.py:502] Loading weights took 2.91 seconds",
    f"{E} [gpu_model_runner.py:5150] Model loading took 12.91 GiB memory and 3.061234 seconds",
    f"{E} [backends.py:1105] Using cache directory: /root/.cache/vllm/torch_compile_cache/x",
    f"{E} [monitor.py:34] torch.compile took 24.10 s in total",
    f"{E} [gpu_worker.py:760] Available KV cache memory: 114.36 GiB",
    f"{E} [gpu_worker.py:775] CUDA graph memory profiling is enabled (default since v0.21.0). "
    "The current --gpu-memory-utilization=0.9200 is equivalent to "
    "--gpu-memory-utilization=0.9136 without CUDA graph memory profiling. To maintain the same "
    "effective KV cache size as before, increase --gpu-memory-utilization to 0.9264.",
    f"{E} [kv_cache_utils.py:2328] GPU KV cache size: 2,141,248 tokens, "
    "Maximum concurrency for 4,096 tokens per request: 522.77x",
    f"{E} [gpu_model_runner.py:6582] Graph capturing finished in 4 secs, took 0.89 GiB",
    f"{E} [core.py:403] init engine (profile, create kv cache, warmup model) took 144.33 seconds",
    "(APIServer pid=4200) INFO:     Application startup complete.",
)
SAMPLE_7B = "\n".join(LINES) + "\n"


def test_reads_every_memory_and_time_line() -> None:
    f = vllm_log.parse(SAMPLE_7B)
    assert (f.weights_gib, f.weights_load_s, f.weights_loading_s) == (12.91, 3.061234, 2.91)
    assert (f.available_kv_gib, f.kv_tokens, f.max_concurrency) == (114.36, 2141248, 522.77)
    assert (f.graph_equiv_util, f.graph_capture_gib, f.graph_capture_s) == (0.9136, 0.89, 4.0)
    assert (f.torch_compile_s, f.init_engine_s) == (24.10, 144.33)
    assert f.attention_backend == "FLASH_ATTN"
    assert f.vllm_version == "0.26.0"
    assert f.failure is None
    est = vllm_log.graph_estimate_bytes(f, 0.92, 150_109_880_320)
    assert est is not None and abs(est / 2**30 - 0.895) < 0.01


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        # older vLLM wording, and the KV size and concurrency on two lines
        ("Model loading took 12.9100 GiB and 3.02 seconds", "weights_gib", 12.91),
        ("Model loading took 12.9100 GiB and 3.02 seconds", "weights_load_s", 3.02),
        ("torch.compile takes 22.97 s in total", "torch_compile_s", 22.97),
        ("GPU KV cache size: 6,741,216 tokens", "kv_tokens", 6741216),
        ("Maximum concurrency for 8,192 tokens per request: 822.90x", "max_concurrency", 822.9),
        ("Using FLASH_ATTN_MLA backend.", "attention_backend", "FLASH_ATTN_MLA"),
    ],
)
def test_variants(line: str, field: str, value: object) -> None:
    assert getattr(vllm_log.parse(f"{E} [x.py:1] {line}\n"), field) == value


@pytest.mark.parametrize(
    "line",
    [
        "ValueError: No available memory for the cache blocks. Try increasing ...",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "RuntimeError: Engine core initialization failed. See root cause above.",
    ],
)
def test_failures_are_found(line: str) -> None:
    text = SAMPLE_7B.split("Available")[0] + f"{E} [core.py:1] {line}\n"
    f = vllm_log.parse(text)
    assert f.failure is not None and line[:20] in f.failure
    assert f.kv_tokens is None


def test_missing_lines_stay_none() -> None:
    f = vllm_log.parse("nothing here\n")
    assert f.weights_gib is None and f.kv_tokens is None and f.failure is None


def test_vllm_026_lines_seen_on_the_h200() -> None:
    """The smoke run of 2026-11-29 (deepfleet up, qwen2-1.5b, eager): lines as logged."""
    c = "(EngineCore pid=839) INFO 11-29 07:13:26"
    text = "\n".join((
        f"{c} [core.py:116] Initializing a V1 LLM engine (v0.26.0) with config: model='/m'",
        f"{c} [model_runner.py:305] Model loading took 2.86 GiB and 3.362632 seconds",
        f"{c} [gpu_worker.py:560] Available KV cache memory: 124.99 GiB",
        f"{c} [kv_cache_utils.py:2177] GPU KV cache size: 4,680,896 tokens",
        f"{c} [kv_cache_utils.py:2178] Maximum concurrency for 8,192 tokens per request: 571.40x",
        f"{c} [gpu_worker.py:857] Free memory on device (139.29/139.8 GiB) on startup. Desired "
        "GPU memory utilization is (0.92, 128.62 GiB). Actual usage is 2.86 GiB for weight, "
        "0.54 GiB for peak activation, 0.22 GiB for non-torch memory, and 0.0 GiB for CUDAGraph "
        "memory. Replace gpu_memory_utilization config with `--kv-cache-memory=134053761127`",
    ))  # fmt: skip
    f = vllm_log.parse(text)
    assert (f.weights_gib, f.available_kv_gib, f.kv_tokens) == (2.86, 124.99, 4680896)
    assert (f.activation_gib, f.non_torch_gib, f.cudagraph_gib) == (0.54, 0.22, 0.0)
    assert f.vllm_version == "0.26.0" and f.kv_tokens_by_rank == {}  # not DP: "EngineCore"
