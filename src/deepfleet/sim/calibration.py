"""The simulator's H200 profile against vLLM measured on the lent H200.

The measurement (2026-11-29, docs/gpu.md, benchmarks/results/gpu/): vLLM 0.26, one H200,
dummy weights, bf16, the R1-Distill-Qwen-7B architecture with SmolLM2's 49,152-token vocabulary
(7.0B parameters, benchmarks/gpu/model_dirs.py), max_model_len 4096, gpu_memory_utilization
0.92, prefix caching, CUDA graphs; closed loop at fixed concurrency straight to the engine,
64-token prompts that never share a prefix, 256 output tokens; tokens counted in 6-15 s windows
after 2 s of warm-up (benchmarks/gpu/load.py), two rounds per concurrency and run.

The simulator runs the same closed loop on virtual time (`run_virtual_window`), so what is
compared is the latency model, not this machine's speed.

    .venv/bin/python -m deepfleet.sim.calibration [--before] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfleet.catalog.model_configs import BUILTIN_CONFIGS
from deepfleet.catalog.models import ModelFacts, from_hf_config
from deepfleet.sim.build import SimSpec, build
from deepfleet.sim.profile import LatencyProfile
from deepfleet.sim.virtual import WindowRun, run_virtual_window

PROMPT_TOKENS = 64
OUTPUT_TOKENS = 256
WARMUP_S = 2.0
WINDOW_S = 12.4


@dataclass(frozen=True)
class Measured:
    """One concurrency on the real engine: a value per round."""

    concurrency: int
    output_tok_s: Sequence[float]
    ttft_p50_ms: Sequence[float]
    itl_p50_ms: Sequence[float] = ()

    @property
    def tok_s(self) -> float:
        return statistics.fmean(self.output_tok_s)


# 2026-11-29, the overhead scenario's direct windows (docs/gpu.md): run A (12.4 s windows; its
# JSON was lost, numbers from its console: one value at 1 stream, TTFT at 64 streams the median),
# run B (6.3 s windows, benchmarks/results/gpu/overhead.json) and run C (256 streams only, 15.4 s
# windows, overhead-256-workers.json), pooled in that order.
H200_2026_11_29 = (
    Measured(1, (217.5, 216.2, 216.8), (18.2, 20.1, 19.4), (4.55, 4.555, 4.551)),
    Measured(64, (11_126.0, 11_233.0, 11_096.3, 11_515.5), (177.0, 184.8, 152.0), (4.896, 4.967)),
    Measured(
        256,
        (12_272.0, 17_159.0, 17_497.2, 16_229.4, 12_475.2, 13_306.0),
        (556.0, 464.0, 496.7, 569.3, 550.2, 515.7),
        (12.505, 13.801, 17.758, 16.061),
    ),
)


def measured_model() -> ModelFacts:
    """The measured engine's architecture: R1-Distill-Qwen-7B with a 49,152-token vocabulary."""
    config = dict(BUILTIN_CONFIGS["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"])
    return from_hf_config({**config, "vocab_size": 49_152}, "qwen2-7b")


def simulate(
    concurrency: int, profile: LatencyProfile | None = None, facts: ModelFacts | None = None
) -> WindowRun:
    """The measured workload at `concurrency` on the simulated H200 (`profile` replaces the
    planner's, e.g. to try other constants)."""
    config, planner, _ = build(
        SimSpec(model="qwen2-7b", gpu="H200", max_model_len=4096), facts or measured_model()
    )
    return asyncio.run(
        run_virtual_window(
            config, profile or planner, concurrency=concurrency,
            prompt_tokens=PROMPT_TOKENS, output_tokens=OUTPUT_TOKENS,
            warmup_s=WARMUP_S, window_s=WINDOW_S,
        )
    )  # fmt: skip


def _round(x: float, digits: int = 3) -> float:
    return round(x, digits)


def compare(measured: Measured, run: WindowRun) -> dict[str, Any]:
    """Simulated vs measured at one concurrency: values and sim / real ratios."""
    row: dict[str, Any] = {
        "concurrency": measured.concurrency,
        "measured_output_tok_s": list(measured.output_tok_s),
        "sim_output_tok_s": _round(run.output_tokens_per_s, 1),
        "tok_s_ratio": _round(run.output_tokens_per_s / measured.tok_s),
        "measured_ttft_p50_ms": list(measured.ttft_p50_ms),
        "sim_ttft_p50_ms": _round(run.ttft.p50 * 1e3),
        "sim_itl_p50_ms": _round(run.itl.p50 * 1e3),
        "sim_requests_in_window": run.requests,
    }
    if len(measured.output_tok_s) > 1:
        row["tok_s_ratio_per_round"] = [
            _round(run.output_tokens_per_s / v) for v in measured.output_tok_s
        ]
    if measured.itl_p50_ms:
        itl = statistics.fmean(measured.itl_p50_ms)
        row["measured_itl_p50_ms"] = list(measured.itl_p50_ms)
        row["itl_p50_ratio"] = _round(run.itl.p50 * 1e3 / itl)
    return row


def profile_constants(profile: LatencyProfile) -> dict[str, float]:
    return {
        "efficiency": profile.efficiency,
        "prefill_mfu": profile.prefill_mfu,
        "step_overhead_s": profile.step_overhead_s,
        "per_seq_s": profile.per_seq_s,
        "host_per_seq_s": profile.host_per_seq_s,
    }


# The GPU constants before this calibration: the same step formula with these values.
BEFORE_2026_11_29 = {"efficiency": 0.6, "per_seq_s": 0.0, "host_per_seq_s": 0.0}


def report(
    measurements: Sequence[Measured] = H200_2026_11_29, constants: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Simulated vs measured per concurrency, with the planner's profile or these constants."""
    _, profile, _ = build(SimSpec(model="qwen2-7b", gpu="H200"), measured_model())
    if constants:
        profile = dataclasses.replace(profile, **constants, _cache={})  # type: ignore[arg-type]
    rows = [compare(m, simulate(m.concurrency, profile)) for m in measurements]
    return {"profile": profile.name, "constants": profile_constants(profile), "rows": rows}


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for r in rows:
        lines.append(
            f"c={r['concurrency']:<4} sim {r['sim_output_tok_s']:>9.1f} tok/s "
            f"(x{r['tok_s_ratio']:.2f} of {r['measured_output_tok_s']}) "
            f"ITL p50 {r['sim_itl_p50_ms']:.3f} ms TTFT p50 {r['sim_ttft_p50_ms']:.1f} ms "
            f"(real {r['measured_ttft_p50_ms']})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument(
        "--before", action="store_true", help="also the constants before this calibration"
    )
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    runs = {"before": BEFORE_2026_11_29, "after": None} if args.before else {"after": None}
    for name, constants in runs.items():
        result[name] = report(constants=constants)
        print(name, result[name]["profile"], result[name]["constants"])
        print(_table(result[name]["rows"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
