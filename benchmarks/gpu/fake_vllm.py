"""FAKE vLLM for proving the GPU scenarios without a GPU: a test double, not an engine.

Takes the arguments deepfleet's vLLM adapter gives `vllm.entrypoints.openai.api_server`,
prints vLLM 0.26's startup lines about memory (numbers from deepfleet's planner, scaled by
FAKE_VLLM_SKEW so the comparison has something to find), then serves deepfleet's simulator on
the port (OpenAI API, vLLM metrics, KV events, /reset_prefix_cache). FAKE_VLLM_SPEED scales
the simulated time (default 1: H200 speed); FAKE_VLLM_START_S sleeps before "loading".
Parallel flags (issue 12) shape the prediction the lines come from: TP/PP as the planner lays
them out, and with --data-parallel-size N one engine core's lines per rank (EngineCore_DPr), as
vLLM logs them; the simulator then stands in for the whole engine with TP = tp x dp.
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
from deepfleet.planner import Parallelism
from deepfleet.sim.build import SimSpec, build
from deepfleet.sim.engine import ScaledClock
from deepfleet.sim.server import serve_engines
from deepfleet.sim.tokenizer import load_tokenizer


def _line(source: str, message: str, rank: int = 0) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"(EngineCore_DP{rank} pid={os.getpid()}) INFO {stamp} [{source}] {message}", flush=True)


def parallel(args: argparse.Namespace) -> Parallelism:
    return Parallelism(
        tp=args.tensor_parallel_size, pp=args.pipeline_parallel_size,
        attn_dp=args.data_parallel_size, ep=args.enable_expert_parallel,
    )  # fmt: skip


def startup_lines(args: argparse.Namespace, skew: float) -> int:
    """Print the memory lines (per DP rank); return the KV tokens of the whole engine."""
    util = args.gpu_memory_utilization or 0.92
    par = parallel(args)
    pred = predict(
        args.model, util, args.max_model_len, parallel=par, max_num_seqs=args.max_num_seqs
    )
    weights = pred.weights_bytes * skew
    if args.kv_cache_memory_bytes:
        kv = float(args.kv_cache_memory_bytes)
    else:
        kv = pred.kv_budget_bytes + pred.weights_bytes - weights
    per_token = pred.kv_bytes_per_token
    blocks = int(kv // (16 * per_token))
    tokens = blocks * 16  # one rank's
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
    for rank in range(par.attn_dp):
        _line(
            "kv_cache_utils.py:2328",
            f"GPU KV cache size: {tokens:,} tokens, Maximum concurrency for "
            f"{args.max_model_len:,} tokens per request: {tokens / args.max_model_len:.2f}x",
            rank,
        )
    _line("gpu_model_runner.py:6582", "Graph capturing finished in 1 secs, took 0.89 GiB")
    _line("core.py:403", "init engine (profile, create kv cache, warmup model) took 1.00 seconds")
    return tokens * par.attn_dp


async def serve(args: argparse.Namespace, kv_tokens: int, speed: float) -> None:
    spec = SimSpec(
        model=args.model, gpu="H200", served_model_name=args.served_model_name,
        tokenizer=args.model, kv_tokens=kv_tokens, max_model_len=args.max_model_len,
        tp=args.tensor_parallel_size * args.data_parallel_size, pp=args.pipeline_parallel_size,
        max_num_seqs=args.max_num_seqs * args.data_parallel_size if args.max_num_seqs else None,
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
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", type=int, default=1)
    p.add_argument("--data-parallel-size", type=int, default=1)
    p.add_argument("--enable-expert-parallel", action="store_true")
    args, _rest = p.parse_known_args()
    time.sleep(float(os.environ.get("FAKE_VLLM_START_S", "0")))
    tokens = startup_lines(args, float(os.environ.get("FAKE_VLLM_SKEW", "1.0")))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, tokens, float(os.environ.get("FAKE_VLLM_SPEED", "1"))))


if __name__ == "__main__":
    main()
