"""Gateways behind HAProxy: one gateway SIGKILLed (and, separately, SIGTERMed) under N streams.

    PYTHONPATH=src .venv/bin/python benchmarks/lb/run.py --runs 3 --json benchmarks/results/lb.json

Each run starts a fleet of 2 fake engines (100 tokens, 50 ms apart: 5 s streams) with
`gateway.instances: 3` behind a real HAProxy, waits until HAProxy routes to all three, starts
N streams, signals gateway-1 two seconds in, and sends a new request every 100 ms for the next
2 s. Counted per run: streams the victim carried (HAProxy's X-Deepfleet-Gateway header), failed
streams on it and elsewhere, hangs (no end within 60 s), new requests and how many succeeded,
and how soon after the signal the first new one got its first byte. The CI version is
tests/fleet/test_lb.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.helpers.lb_scenario import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    for sig in ("SIGKILL", "SIGTERM"):
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as d:
                try:
                    results.append(asdict(run(Path(d), args.streams, gateways=3, sig=sig)))
                except Exception as exc:  # a run that could not start is reported, not hidden
                    results.append({"signal": sig, "error": f"{type(exc).__name__}: {exc}"})
            print(json.dumps(results[-1]), flush=True)
    summary = {
        "what": "one of 3 gateways signalled under N streams through HAProxy (fake engines)",
        "cpu_cores": os.cpu_count(),
        "runs": results,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
