"""FAKE vLLM for proving the GPU scenarios without a GPU: a test double, not an engine.

Takes the arguments deepfleet's vLLM adapter gives `vllm.entrypoints.openai.api_server`,
prints vLLM 0.26's startup lines about memory (numbers from deepfleet's planner, scaled by
FAKE_VLLM_SKEW so the comparison has something to find), then serves deepfleet's simulator on
the port (OpenAI API, vLLM metrics, KV events, /reset_prefix_cache). FAKE_VLLM_SPEED scales
the simulated time (default 1: H200 speed); FAKE_VLLM_START_S sleeps before "loading".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time

from benchmarks.gpu.planner_check import predict

from deepfleet.catalog.hardware import GiB
from deepfleet.sim.build import SimSpec, build
from deepfleet.sim.engine import ScaledClock
from deepfleet.sim.server import serve_engines
from deepfleet.sim.tokenizer import load_tokenizer


def _line(source: str, message: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"(EngineCore_DP0 pid={os.getpid()}) INFO {stamp} [{source}] {message}", flush=True)


def startup_lines(args: argparse.Namespace, skew: float) -> int:
    """Print the memory lines; return the KV tokens they announce."""
    util = args.gpu_memory_utilization or 0.92
    pred = predict(args.model, util, args.max_model_len)
    weights = pred.weights_bytes * skew
    if args.kv_cache_memory_bytes:
        kv = float(args.kv_cache_memory_bytes)
    else:
        kv = pred.kv_budget_bytes + pred.weights_bytes - weights
    per_token = pred.kv_bytes_per_token
    blocks = int(kv // (16 * per_token))
    tokens = blocks * 16
    graphs = 0.9 * GiB
    print(f"INFO vLLM API server version 0.26.0 (FAKE: deepfleet simulator) {args.model}")
    _line("cuda.py:507", "Using FLASH_ATTN attention backend out of potential backends: ['X'].")
    _line(
        "gpu_model_runner.py:5150",
        f"Model loading took {weights / GiB:.2f} GiB memory and 3.05 seconds",
    )
    _line("monitor.py:34", "torch.compile took 0.10 s in total")
    _line("gpu_worker.py:760", f"Available KV cache memory: {kv / GiB:.2f} GiB")
    equiv = util - graphs / pred.total_bytes
    _line(
        "gpu_worker.py:775",
        f"CUDA graph memory profiling is enabled (default since v0.21.0). The current "
        f"--gpu-memory-utilization={util:.4f} is equivalent to --gpu-memory-utilization="
        f"{equiv:.4f} without CUDA graph memory profiling.",
    )
    _line(
        "kv_cache_utils.py:2328",
        f"GPU KV cache size: {tokens:,} tokens, Maximum concurrency for "
        f"{args.max_model_len:,} tokens per request: {tokens / args.max_model_len:.2f}x",
    )
    _line("gpu_model_runner.py:6582", "Graph capturing finished in 1 secs, took 0.89 GiB")
    _line("core.py:403", "init engine (profile, create kv cache, warmup model) took 1.00 seconds")
    return tokens


async def serve(args: argparse.Namespace, kv_tokens: int, speed: float) -> None:
    spec = SimSpec(
        model=args.model, gpu="H200", served_model_name=args.served_model_name,
        tokenizer=args.model, kv_tokens=kv_tokens, max_model_len=args.max_model_len,
    )  # fmt: skip
    config, profile, _ = build(spec)
    tok = load_tokenizer(args.model)
    endpoint = None
    if args.kv_events_config:
        endpoint = json.loads(args.kv_events_config).get("endpoint")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve_engines(
        config, profile, tok, count=1, port=args.port, kv_events=endpoint, clock=ScaledClock(speed)
    ):
        print(f"INFO Starting vLLM API server 0 on http://{args.host}:{args.port}", flush=True)
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--served-model-name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--kv-cache-memory-bytes", type=int)
    p.add_argument("--kv-events-config")
    args, _rest = p.parse_known_args()
    time.sleep(float(os.environ.get("FAKE_VLLM_START_S", "0")))
    tokens = startup_lines(args, float(os.environ.get("FAKE_VLLM_SKEW", "1.0")))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, tokens, float(os.environ.get("FAKE_VLLM_SPEED", "1"))))


if __name__ == "__main__":
    main()
