"""SIMULATOR: prefill/decode disaggregation against the aggregated layout, on virtual time.

No engine runs: every step time comes from the planner's roofline (deepfleet.sim.pd). For
DeepSeek-R1 on 8 nodes x 8 H200, the planner's best P/D split and its best aggregated layout
(deepfleet.planner.pd_plan) serve Poisson arrivals of two workloads, at rates around the
planner's predicted goodputs; goodput counts requests meeting TTFT <= 2 s and ITL <= 50 ms
(ITL: the request's mean inter-token time), for requests arriving after a 20 s warm-up.

    PYTHONPATH=src .venv/bin/python benchmarks/pd/virtual_pd.py [--duration 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import ClusterShape, plan
from deepfleet.planner.disagg import Pool, Workload, chat_workload, long_prompt_workload
from deepfleet.planner.kv import kv_bytes_per_token
from deepfleet.planner.pd_plan import Option, plan_pd
from deepfleet.sim.pd import SimResult, simulate

WARMUP_S = 20.0
"""Arrivals before this are not counted: the decode batch takes ~10 s to reach steady state."""
LABEL = "SIMULATOR (virtual time, planner roofline; no engine ran)"


def _pool(model_name: str, cluster: ClusterShape, nodes: int, layout_label: str) -> Pool:
    m = load_model_facts(model_name)
    sub = replace(cluster, nodes=nodes)
    p = plan(m, sub, alternatives=False)
    layout = next(lay for lay in p.layouts if lay.label == layout_label)
    return Pool(m, p.weight_format, sub, layout)


def _pools(model: str, cluster: ClusterShape, o: Option) -> tuple[Pool, Pool | None]:
    dec = _pool(model, cluster, o.decode_nodes, o.decode.label)
    pre = _pool(model, cluster, o.prefill_nodes, o.prefill.label) if o.prefill else None
    return dec, pre


def _row(r: SimResult) -> dict[str, float | str | int]:
    return {
        "layout": r.label,
        "rate": round(r.rate, 2),
        "requests": r.requests,
        "goodput": round(r.goodput, 2),
        "met": round(r.met, 3),
        "ttft_p50_s": round(r.ttft.p50, 3),
        "ttft_p99_s": round(r.ttft.p99, 3),
        "itl_p50_ms": round(r.itl.p50 * 1e3, 1),
        "itl_p99_ms": round(r.itl.p99 * 1e3, 1),
    }


def run(work: Workload, duration: float, seed: int) -> dict[str, object]:
    model = "deepseek-ai/DeepSeek-R1"
    m = load_model_facts(model)
    cluster = ClusterShape(get_device("H200"), 8, 8)
    p = plan_pd(m, cluster, work)
    assert p.aggregated is not None and p.pd is not None
    kvb = kv_bytes_per_token(m, 2)
    top = max(p.aggregated.goodput, p.pd.goodput)
    rates = [round(top * f, 2) for f in (0.25, 0.5, *(x / 10 for x in range(6, 17)))]
    rows = []
    for opt in (p.aggregated, p.pd):
        dec, pre = _pools(model, cluster, opt)
        for rate in rates:
            r = simulate(
                work,
                rate,
                dec,
                pre,
                link_bandwidth=p.link_bandwidth,
                kv_bytes_per_token=kvb,
                duration_s=duration + WARMUP_S,
                warmup_s=WARMUP_S,
                seed=seed,
                label=opt.label,
            )
            rows.append(_row(r))
            print(LABEL, work.name, json.dumps(rows[-1]), flush=True)
    best = {
        kind: max((r for r in rows if r["layout"] == o.label), key=lambda r: r["goodput"])
        for kind, o in (("aggregated", p.aggregated), ("pd", p.pd))
    }
    return {
        "workload": work.name,
        "planner_pick": p.recommended.label if p.recommended else None,
        "planner_reason": p.reason,
        "rows": rows,
        "best": best,
        "pd_over_aggregated": round(
            float(best["pd"]["goodput"]) / max(float(best["aggregated"]["goodput"]), 1e-9), 2
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds of counted arrivals (after a 20 s warm-up)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    out = {"label": LABEL, "model": "DeepSeek-R1", "cluster": "8 x 8 H200", "results": []}
    for work in (long_prompt_workload(), chat_workload()):
        res = run(work, args.duration, args.seed)
        out["results"].append(res)  # type: ignore[attr-defined]
        print(f"{LABEL}: {work.name}: planner picks {res['planner_pick']}: {res['planner_reason']}")
        for kind, row in res["best"].items():  # type: ignore[attr-defined]
            print(f"  best {kind}: {json.dumps(row)}")
        print(f"  P/D / aggregated goodput: {res['pd_over_aggregated']}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
