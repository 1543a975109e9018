"""Benchmark: the deepfleet gateway against the engine alone, in one run.

Starts a local fleet of the bundled model on vLLM's CPU build and measures two ways:

1. `ttft_pairs`: one request at a time, to the engine and through the gateway in alternating
   order; the median per-pair difference is the added TTFT.
2. `rounds`: the whole load through one path, then the other, in interleaved rounds
   (`deepfleet bench compare`): whole-run throughput ratio.

    .venv/bin/python benchmarks/gateway_vs_direct.py [--concurrency 16] [--requests 96]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from deepfleet.bench.client import OpenAIClient, RequestSpec
from deepfleet.bench.stats import percentile
from deepfleet.fleet.ports import free_port

DEEPFLEET = [sys.executable, "-m", "deepfleet"]
PATHS = ("direct", "gateway")


async def ttft_pairs(
    urls: dict[str, str], model: str, pairs: int, prompt_words: int
) -> dict[str, Any]:
    """One request at a time, direct and through the gateway in alternating order: the
    median of the per-pair TTFT differences is the gateway's added TTFT, with the engine's
    step-time jitter mostly cancelled."""
    clients = {p: OpenAIClient(urls[p]) for p in PATHS}
    ttft: dict[str, list[float]] = {p: [] for p in PATHS}
    diffs: list[float] = []
    try:
        for i in range(pairs + 2):
            words = " ".join(f"w{(i * 7 + k) % 997}" for k in range(prompt_words))
            spec = RequestSpec(prompt=f"[{i}] {words}", max_tokens=2)
            order = PATHS if i % 2 else PATHS[::-1]
            got = {p: await clients[p].send(model, spec) for p in order}
            if i < 2 or not all(r.ok for r in got.values()):
                continue  # warm-up, or a failure (counted below)
            for p in PATHS:
                ttft[p].append(got[p].ttft_s)
            diffs.append(got["gateway"].ttft_s - got["direct"].ttft_s)
    finally:
        for c in clients.values():
            await c.close()
    return {
        "pairs": len(diffs),
        "direct_ttft_p50_ms": percentile(ttft["direct"], 50) * 1000,
        "gateway_ttft_p50_ms": percentile(ttft["gateway"], 50) * 1000,
        "added_ttft_p50_ms": statistics.median(diffs) * 1000,
        "added_ttft_p90_ms": percentile(diffs, 90) * 1000,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=96, help="per path")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--prompt-words", type=int, default=32)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/gateway_vs_direct.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="deepfleet-bench-") as tmp:
        state = ["--state-dir", tmp]
        subprocess.run(
            [*DEEPFLEET, "up", "--detach", "--port", str(free_port()), *state], check=True
        )
        try:
            status = json.loads(
                subprocess.run(
                    [*DEEPFLEET, "status", "--json", *state], check=True, capture_output=True
                ).stdout
            )
            urls = {"direct": status["replicas"][0]["endpoint"], "gateway": status["gateway_url"]}
            model = status["models"][0]["name"]
            print(f"ttft pairs: {args.pairs} sequential pairs", flush=True)
            result = {
                "ttft_pairs": asyncio.run(ttft_pairs(urls, model, args.pairs, args.prompt_words))
            }
            print(json.dumps(result["ttft_pairs"], indent=1), flush=True)
            rounds_json = args.json.with_suffix(".rounds.json")
            cmd = [
                *DEEPFLEET, "bench", "compare",
                "--target", f"direct={urls['direct']}",
                "--target", f"gateway={urls['gateway']},{urls['direct']}/metrics",
                "--workload", "synthetic", "--set", "input_len=64",
                "--set", f"output_len={args.output_len}", "--set", "range_ratio=0",
                "--concurrency", str(args.concurrency), "--requests", str(args.requests),
                "--rounds", str(args.rounds), "--json", str(rounds_json),
            ]  # fmt: skip
            rc = subprocess.run(cmd, check=False).returncode
            result["rounds"] = json.loads(rounds_json.read_text())["ratios"]
            rounds_json.unlink()
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1))
            print(f"wrote {args.json}")
            return rc
        finally:
            subprocess.run([*DEEPFLEET, "down", *state], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
