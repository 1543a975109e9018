"""SIMULATOR: deepfleet's SLO autoscaler against a queue-threshold scaler and a fixed fleet.

The replicas are the GPU-calibrated simulated H200 (sim/calibration.py: vLLM 0.26's measured
7B on one H200), run as fluid engines (sim/fluid.py) in virtual time; the trace is one
day's diurnal shape with bursts over `--hours` (sim/diurnal.py), sized so its highest rate
(a burst on the peak) needs `--peak-replicas` replicas at the target utilisation. The three
scalers see the same trace in the same run:

- deepfleet-slo: the controller's decision core (deepfleet.autoscale), min 1, max peak;
- queue-threshold: production-stack's KEDA rule (sum of vllm:num_requests_waiting, threshold
  per replica, HPA defaults), min 1, max peak;
- fixed: the peak size all day.

SLO attainment is the share of requests with TTFT <= --ttft and mean ITL <= --itl;
replica-hours count a replica from the moment it is asked for (120 s of loading by default)
until it has drained and stopped.

    PYTHONPATH=src .venv/bin/python benchmarks/autoscale/diurnal.py [--short] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepfleet.autoscale import Targets, replica_capacity
from deepfleet.catalog.model_configs import BUILTIN_CONFIGS
from deepfleet.catalog.models import ModelFacts, from_hf_config
from deepfleet.sim.autoscale_fleet import FleetRun, FleetSpec, RunResult
from deepfleet.sim.build import SimSpec, build
from deepfleet.sim.diurnal import DiurnalTrace
from deepfleet.sim.scalers import FixedScaler, QueueScaler, Scaler, SloScaler

RESULTS = Path(__file__).resolve().parents[1] / "results" / "autoscale"


def measured_model() -> ModelFacts:
    """sim.calibration.measured_model (the 7B measured on the H200), without importing the
    calibration's closed-loop machinery, so this runs on a bare Python (a test checks the
    two agree)."""
    config = dict(BUILTIN_CONFIGS["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"])
    return from_hf_config({**config, "vocab_size": 49_152}, "qwen2-7b")


def fleet_spec(args: argparse.Namespace, trace: DiurnalTrace) -> FleetSpec:
    config, profile, _ = build(
        SimSpec(model="qwen2-7b", gpu="H200", max_model_len=8192), measured_model()
    )
    capacity = replica_capacity(
        lambda b, ctx: profile.step_s(b, ctx, 0),
        profile.prefill_s,
        input_tokens=trace.mean_input,
        output_tokens=trace.mean_output,
        itl_s=args.itl,
        max_seqs=config.max_num_seqs,
        kv_tokens=config.kv_tokens,
    )
    return FleetSpec(
        profile=profile,
        max_seqs=config.max_num_seqs,
        kv_tokens=config.kv_tokens,
        capacity_rps=capacity,
        ttft_s=args.ttft,
        itl_s=args.itl,
        start_delay_s=args.start_delay,
        initial=1,
    )


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 (nearest rank; no numpy, so the run needs only the standard library)."""
    ordered = sorted(values) or [0.0]
    return {f"p{q}": ordered[min(len(ordered) - 1, len(ordered) * q // 100)] for q in (50, 90, 99)}


def summary(res: RunResult, wall_s: float) -> dict[str, Any]:
    ttft, itl = percentiles(res.ttfts), percentiles(res.itls)
    return {
        "scaler": res.scaler,
        "requests": res.requests,
        "slo_attainment": round(res.attainment, 5),
        "ttft_attainment": round(res.ttft_met / max(1, res.requests), 5),
        "itl_attainment": round(res.itl_met / max(1, res.requests), 5),
        "replica_hours": round(res.replica_hours, 2),
        "peak_replicas": res.peak_replicas,
        "scaling_decisions": res.decisions,
        "ttft_s": {k: round(v, 3) for k, v in ttft.items()},
        "itl_ms": {k: round(v * 1e3, 2) for k, v in itl.items()},
        "wall_s": round(wall_s, 1),
        "decision_log_head": res.log[:40],
        "timeline": res.timeline,
    }


def setup(args: argparse.Namespace) -> tuple[DiurnalTrace, FleetSpec, list[Scaler]]:
    """The trace, the replicas and the three scalers: rebuilt the same in every worker."""
    spec = fleet_spec(args, DiurnalTrace(hours=args.hours))
    util = args.utilization
    max_rate = args.peak_replicas * spec.capacity_rps * util
    trace = DiurnalTrace(
        hours=args.hours,
        peak_rps=max_rate / args.burst_factor,
        trough_fraction=args.trough,
        bursts=args.bursts,
        burst_factor=args.burst_factor,
        burst_s=args.burst_s,
        seed=args.seed,
    )
    targets = Targets(
        min_replicas=1,
        max_replicas=args.peak_replicas,
        ttft_p90_s=args.ttft,
        itl_p90_s=args.itl,
        queue_per_replica=args.queue_threshold,
        up_cooldown_s=30.0,
        down_cooldown_s=args.down_cooldown,
        utilization=util,
        lead_s=args.start_delay,
    )
    scalers: list[Scaler] = [
        SloScaler(targets),
        QueueScaler(args.queue_threshold, 1, args.peak_replicas),
        FixedScaler(args.peak_replicas),
    ]
    return trace, spec, scalers


def run_one(args: argparse.Namespace, index: int) -> dict[str, Any]:
    """Scaler `index` over the trace. The autoscaled fleets start with the replicas the
    trace's first rate needs (as if they had run the day before), the fixed one at peak."""
    trace, spec, scalers = setup(args)
    scaler = scalers[index]
    first = math.ceil(trace.rate(0.0) / (spec.capacity_rps * args.utilization))
    initial = args.peak_replicas if isinstance(scaler, FixedScaler) else max(1, first)
    start = time.monotonic()
    res = FleetRun(trace, replace(spec, initial=initial), scaler).run()
    wall = time.monotonic() - start
    print(
        f"{res.scaler:28} SLO {res.attainment:7.2%}  replica-hours {res.replica_hours:8.1f}"
        f"  peak {res.peak_replicas:3}  requests {res.requests:,}  ({wall:.0f} s wall)",
        file=sys.stderr,
    )
    return summary(res, wall)


def run(args: argparse.Namespace) -> dict[str, Any]:
    trace, spec, scalers = setup(args)
    if args.jobs > 1:
        with ProcessPoolExecutor(min(args.jobs, len(scalers))) as pool:
            rows = list(pool.map(run_one, [args] * len(scalers), range(len(scalers))))
    else:
        rows = [run_one(args, i) for i in range(len(scalers))]
    fixed_hours = rows[-1]["replica_hours"]
    for row in rows:
        row["replica_hours_vs_fixed"] = round(row["replica_hours"] / fixed_hours, 4)
    return {
        "label": "SIMULATOR: virtual time, fluid engines from the GPU-calibrated H200 profile; "
        "no engine ran",
        "replica": spec.profile.name,
        "replica_capacity_rps": round(spec.capacity_rps, 3),
        "max_num_seqs": spec.max_seqs,
        "kv_tokens": spec.kv_tokens,
        "targets": {"ttft_s": args.ttft, "itl_s": args.itl},
        "trace": {
            "hours": trace.hours,
            "peak_rps": round(trace.peak_rps, 2),
            "trough_rps": round(trace.peak_rps * trace.trough_fraction, 2),
            "bursts": trace.bursts,
            "burst_factor": trace.burst_factor,
            "burst_s": trace.burst_s,
            "burst_starts_s": [round(b) for b in trace.burst_starts],
            "classes (share, input, output)": [list(c) for c in trace.classes],
            "seed": trace.seed,
        },
        "fleet": {
            "peak_replicas": args.peak_replicas,
            "utilization": args.utilization,
            "start_delay_s": args.start_delay,
            "decision_interval_s": spec.interval_s,
            "window_s": spec.window_s,
            "tick_s": spec.dt,
            "queue_threshold": args.queue_threshold,
            "down_cooldown_s": args.down_cooldown,
        },
        "results": rows,
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--short", action="store_true", help="30 virtual minutes, 8 replicas (CI)")
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--peak-replicas", type=int, default=64)
    p.add_argument("--trough", type=float, default=0.15, help="trough rate / peak rate")
    p.add_argument("--bursts", type=int, default=8)
    p.add_argument("--burst-factor", type=float, default=1.3)
    p.add_argument("--burst-s", type=float, default=300.0)
    p.add_argument("--ttft", type=float, default=1.0, help="TTFT target, seconds")
    p.add_argument("--itl", type=float, default=0.03, help="ITL target, seconds")
    p.add_argument("--utilization", type=float, default=0.75)
    p.add_argument("--start-delay", type=float, default=120.0)
    p.add_argument("--down-cooldown", type=float, default=300.0)
    p.add_argument("--queue-threshold", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="scalers run in parallel processes")
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args(argv)
    if args.short:
        args.hours, args.peak_replicas, args.bursts = 0.5, 8, 2
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    out = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    for row in out["results"]:
        print(
            f"{row['scaler']:28} SLO {row['slo_attainment']:.2%} replica-hours "
            f"{row['replica_hours']} ({row['replica_hours_vs_fixed']:.0%} of fixed)"
        )
    return out


if __name__ == "__main__":
    main()
