"""Run named GPU scenarios (issues 11 and 12) on a lent GPU machine; numbers under OUT.

Scenarios, in the order given, under one hard time budget (--budget seconds for the whole run):

  overhead   one vLLM engine of qwen2-7b (gpu_memory_utilization 0.92, max_model_len 4096,
             prefix caching), the deepfleet gateway in front of it; 1/64/256 streams of
             64-token prompts and 256 output tokens, direct vs gateway in alternating rounds.
             Also writes planner-qwen2-7b.json from that engine's startup log.
  planner    one engine of --planner-model at vLLM's defaults; its startup memory lines vs
             `deepfleet plan` (dsv3-8l gets VLLM_USE_DEEP_GEMM=0)
  routing    --routing-engines engines sharing the GPU (or --routing-gpus-per-engine N: each
             engine on its own N GPUs), a kv_aware and a round_robin gateway, a multi-turn
             shared-prefix workload per policy from empty prefix caches
  offload    two engines with the same small GPU KV cache, one with the offload config that
             `kv_cache: {offload: cpu}` generates; documents sent twice (benchmarks/gpu/offload.py)
Issue 12 (benchmarks/gpu/served.py), each through `deepfleet up` with a generated fleet.yaml:
  r1         DeepSeek-R1 (61 layers, fp8, MTP off, dummy weights), TP 8 on 8 GPUs: start time,
             memory lines vs the planner, decode at 1/64/256 streams of 1K in / 1K out,
             direct and through the gateway, next to the planner's roofline
  r1-dp      the same with data-parallel attention 8 + expert parallelism (unverified on GPU)
  v3-tp2     the 8-layer V3 slice with TP 2 (--v3-pp: PP 2) on 2 GPUs
  smoke      the same flow with qwen2-1.5b on one GPU, eager (a short start): proves it

Writes OUT/<scenario>.json after every step (a timeout still leaves data), OUT/logs.txt (each
process log's head and tail) at the end, and stops every process it started.
--fake serves deepfleet's simulator behind vLLM's startup lines (benchmarks/gpu/fake_vllm.py)
instead of vLLM, to prove the flow without a GPU.

    python3 scripts/gpu/run_scenario.py --out $OUT --budget 540 overhead
    python3 scripts/gpu/run_scenario.py --out $OUT --budget 540 planner routing
    python3 scripts/gpu/run_scenario.py --out $OUT --budget 560 r1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "src"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
)

from benchmarks.gpu import offload, scenarios, served  # noqa: E402
from benchmarks.gpu.procs import Budget, Procs, log, on_signals  # noqa: E402

LOG_HEAD, LOG_TAIL = 200, 150


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "scenarios", nargs="+",
        choices=("overhead", "planner", "routing", "offload", *served.SCENARIOS),
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole run")
    p.add_argument("--models", type=Path, default=ROOT / ".gpu-models")
    p.add_argument("--fake", action="store_true", help="simulated engines (no GPU)")
    g = p.add_argument_group("overhead")
    g.add_argument("--model", default="qwen2-7b")
    g.add_argument("--concurrency", default="1,64,256")
    g.add_argument("--rounds", type=int, default=2)
    g.add_argument(
        "--workers", default="1", help="gateway worker processes; a list (1,2) runs a gateway each"
    )
    g.add_argument("--max-tokens", type=int, default=256)
    g.add_argument("--start-cap", type=float, default=360, help="engine start limit, seconds")
    g.add_argument("--overhead-s", type=float, help="seconds for this scenario (default: all)")
    g = p.add_argument_group("planner")
    g.add_argument("--planner-model", default="dsv3-8l")
    g.add_argument("--planner-max-model-len", type=int, default=8192)
    g.add_argument("--planner-start-cap", type=float, default=260)
    g = p.add_argument_group("routing")
    g.add_argument("--routing-model", default="qwen2-7b")
    g.add_argument("--routing-engines", type=int, default=2)
    g.add_argument(
        "--routing-util", type=float, help="default: 0.42 sharing a GPU, 0.92 on its own GPUs"
    )
    g.add_argument(
        "--routing-gpus-per-engine", type=int, default=0,
        help="0: engines share GPU 0; N: engine i gets GPUs i*N..i*N+N-1 and TP N",
    )  # fmt: skip
    g.add_argument(
        "--routing-kv-gib", type=float, default=16.0,
        help="KV cache per engine (vLLM --kv-cache-memory-bytes; 0: from the utilization, "
        "which needs --sequential-start)",
    )  # fmt: skip
    g.add_argument("--sequential-start", action="store_true")
    g.add_argument("--routing-start-cap", type=float, default=300)
    g.add_argument("--groups", type=int, default=8)
    g.add_argument("--users", type=int, default=16)
    g.add_argument("--turns", type=int, default=6)
    g.add_argument("--system-len", type=int, default=1000)
    g.add_argument("--history-len", type=int, default=2000)
    g.add_argument("--routing-max-tokens", type=int, default=64)
    g.add_argument("--policy-limit", type=float, default=120, help="seconds per policy run")
    g.add_argument("--repeats", type=int, default=1)
    g = p.add_argument_group("offload (kv_cache offload: cpu vs none)")
    g.add_argument("--offload-model", default="qwen2-7b")
    g.add_argument("--offload-gpu-kv-gib", type=float, default=2.0)
    g.add_argument("--offload-cpu-gib", type=float, default=32.0)
    g.add_argument("--offload-docs", type=int, default=48)
    g.add_argument("--offload-doc-len", type=int, default=3000)
    g.add_argument("--offload-start-cap", type=float, default=320)
    g = p.add_argument_group("r1, r1-dp, v3-tp2 (issue 12, through deepfleet up)")
    g.add_argument("--served-start-cap", type=float, default=430, help="seconds to ready")
    g.add_argument("--decode-concurrency", default="1,64,256")
    g.add_argument("--decode-input", type=int, default=1024)
    g.add_argument("--decode-output", type=int, default=1024)
    g.add_argument("--decode-rounds", type=int, default=2)
    g.add_argument("--decode-window", type=float, help="seconds (default: share the budget)")
    g.add_argument("--prefill-tok-s", type=float, default=20000.0, help="for the ramp")
    g.add_argument("--no-decode", action="store_true", help="start and memory only")
    g.add_argument("--gateway-workers", type=int, default=1)
    g.add_argument("--served-max-model-len", type=int, default=8192)
    g.add_argument(
        "--vllm-graphs", action="store_true",
        help="vLLM's CUDA graph sizes (default for r1/r1-dp: powers of 2, a shorter start)",
    )  # fmt: skip
    g.add_argument("--v3-pp", action="store_true", help="v3-tp2 as PP 2 instead of TP 2")
    return p.parse_args()


def served_spec(args: argparse.Namespace, name: str) -> served.ServedSpec:
    spec = served.SCENARIOS[name]
    changes: dict[str, object] = {
        "gateway_workers": args.gateway_workers, "max_model_len": args.served_max_model_len,
    }  # fmt: skip
    if args.vllm_graphs:
        changes["graph_sizes"] = None
    if name == "v3-tp2" and args.v3_pp:
        changes |= {"tp": 1, "pp": 2}
    return replace(spec, **changes)  # type: ignore[arg-type]


def meta(args: argparse.Namespace) -> dict[str, object]:
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    versions = {}
    for mod in ("vllm", "torch", "transformers"):
        probe = subprocess.run(
            [sys.executable, "-c", f"import importlib.metadata as m; print(m.version('{mod}'))"],
            capture_output=True, text=True,
        )  # fmt: skip
        versions[mod] = probe.stdout.strip() or None
    return {
        "argv": sys.argv[1:], "git": git or None, "python": platform.python_version(),
        "host": platform.node(), "started_unix": time.time(), "fake": args.fake,
        "versions": versions,
    }  # fmt: skip


def write_logs(procs: Procs, out: Path) -> None:
    """One file (the device returns at most 8): the head and tail of every process log."""
    parts = []
    for path in sorted(procs.logs.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        parts.append(f"===== {path.name} ({len(lines)} lines)")
        if len(lines) > LOG_HEAD + LOG_TAIL:
            lines = [*lines[:LOG_HEAD], f"... {len(lines) - LOG_HEAD - LOG_TAIL} lines ...",
                     *lines[-LOG_TAIL:]]  # fmt: skip
        parts.extend(line[:600] for line in lines)
    (out / "logs.txt").write_text("\n".join(parts) + "\n")


async def main(args: argparse.Namespace, procs: Procs, budget: Budget) -> None:
    work = procs.logs.parent / "work"
    run = scenarios.Run(procs, budget, args.out, work, args.models, args.fake, meta(args))
    for name in args.scenarios:
        log(f"== {name} ({budget.left():.0f} s left)")
        try:
            if name == "overhead":
                concs = [int(c) for c in args.concurrency.split(",")]
                await scenarios.overhead(
                    run, args.model, concs, args.rounds, [int(w) for w in args.workers.split(",")],
                    args.start_cap,
                    max_tokens=args.max_tokens, share_s=args.overhead_s,
                )  # fmt: skip
            elif name in served.SCENARIOS:
                decode = served.Decode(
                    concurrencies=tuple(int(c) for c in args.decode_concurrency.split(",")),
                    input_len=args.decode_input, output_len=args.decode_output,
                    rounds=args.decode_rounds, prefill_tok_s=args.prefill_tok_s,
                    window_s=args.decode_window,
                )  # fmt: skip
                await served.served(
                    run, served_spec(args, name), decode, args.served_start_cap,
                    measure=not args.no_decode,
                )  # fmt: skip
            elif name == "offload":
                await offload.offload(
                    run, args.offload_model, args.offload_gpu_kv_gib, args.offload_cpu_gib,
                    args.offload_docs, args.offload_doc_len, args.offload_start_cap,
                )  # fmt: skip
            elif name == "planner":
                await scenarios.planner(
                    run, args.planner_model, args.planner_max_model_len, args.planner_start_cap
                )
            else:
                workload = {
                    "groups": args.groups, "users": args.users, "rounds": args.turns,
                    "system_len": args.system_len, "history_len": args.history_len,
                    "max_tokens": args.routing_max_tokens, "limit_s": int(args.policy_limit),
                }  # fmt: skip
                gpus = args.routing_gpus_per_engine
                util = args.routing_util or (0.92 if gpus >= 1 else 0.42)
                await scenarios.routing(
                    run, args.routing_model, args.routing_engines, util,
                    args.routing_kv_gib or None, not args.sequential_start,
                    args.routing_start_cap, workload, args.repeats, gpus,
                )  # fmt: skip
        except Exception as exc:  # one scenario's failure must not lose the next one's time
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            (args.out / f"{name}-error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        finally:
            procs.stop_all()
        log(f"== {name} done ({budget.left():.0f} s left)")


def run() -> None:
    args = parse()
    budget = Budget(args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    procs = Procs(Path(tempfile.mkdtemp(prefix="deepfleet-gpu-")) / "logs")
    on_signals(procs)
    try:
        asyncio.run(asyncio.wait_for(main(args, procs, budget), timeout=args.budget))
    except TimeoutError:
        log("time budget reached")
    finally:
        procs.stop_all()
        write_logs(procs, args.out)
        log(f"wrote {sorted(p.name for p in args.out.iterdir())}")


if __name__ == "__main__":
    run()
