"""Routing decisions of the virtual-time KV routing replay (virtual_fleet.py), one line per
request, to compare two versions of the router: the same workload and arrivals, each request's
chosen replica and reason, plus each run's summary.

    PYTHONPATH=src .venv/bin/python benchmarks/kv_routing/replay_decisions.py --out A.jsonl
    (in another checkout) ... --out B.jsonl;  cmp A.jsonl B.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import virtual_fleet as vf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="4,8,16")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--policies", default="kv_aware,prefix_hash,least_load,power_of_two,round_robin")
    p.add_argument("--jitter", type=float, default=0.15)
    p.add_argument("--event-lag", type=float, default=0.05)
    p.add_argument("--out", type=Path, required=True)
    mine = p.parse_args()
    sys.argv = [sys.argv[0], "--jitter", str(mine.jitter), "--event-lag", str(mine.event_lag)]
    args = argparse.Namespace(**vars(_defaults()))
    with mine.out.open("w") as fh:
        for rate in (float(r) for r in mine.rates.split(",")):
            for policy in mine.policies.split(","):
                for seed in range(mine.seeds):
                    vf.seq_owner.clear()
                    requests = vf.one_run(args, policy, {}, rate, seed)
                    summary = vf.summarize(requests)
                    fh.write(json.dumps({"rate": rate, "policy": policy, "seed": seed,
                                         "decisions": [[r.replica, r.reason] for r in requests],
                                         "summary": summary}) + "\n")  # fmt: skip
                    print(f"rate {rate:g} {policy} seed {seed}: hit {summary['hit']:.4f} "
                          f"p99 {summary['p99']:.3f}", flush=True)  # fmt: skip


def _defaults() -> argparse.Namespace:
    """virtual_fleet.py's own argument defaults (with this script's noise settings)."""
    captured: dict[str, argparse.Namespace] = {}
    real = argparse.ArgumentParser.parse_args

    def grab(self: argparse.ArgumentParser, *a: object, **k: object) -> argparse.Namespace:
        ns = real(self, *a, **k)  # type: ignore[arg-type]
        captured["ns"] = ns
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab  # type: ignore[method-assign]
    try:
        vf.main()
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[method-assign]
    return captured["ns"]


if __name__ == "__main__":
    main()
