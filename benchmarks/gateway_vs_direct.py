"""Benchmark: the deepfleet gateway against the engine alone, in one run.

Starts a local fleet of the bundled model on vLLM's CPU build and measures two ways:

1. `paired`: 16 concurrent streams where every stream alternates between the engine's own port
   and the gateway, so at any moment half the load takes each path and both see the same engine
   state. Differences are the gateway's own cost: TTFT, and the per-stream decode rate.
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

from deepfleet.bench.client import OpenAIClient, RequestResult, RequestSpec
from deepfleet.bench.stats import percentile
from deepfleet.fleet.ports import free_port

DEEPFLEET = [sys.executable, "-m", "deepfleet"]
PATHS = ("direct", "gateway")


def decode_rate(r: RequestResult) -> float:
    """Tokens per second of one stream after its first token."""
    return (r.output_tokens - 1) / (r.e2e_s - r.ttft_s) if r.e2e_s > r.ttft_s else 0.0


async def paired(
    urls: dict[str, str],
    model: str,
    concurrency: int,
    requests: int,
    prompt_words: int,
    output_len: int,
) -> dict[str, Any]:
    results: dict[str, list[RequestResult]] = {p: [] for p in PATHS}
    clients = {p: OpenAIClient(urls[p]) for p in PATHS}
    counter = iter(range(requests))

    async def worker(w: int) -> None:
        for i in counter:
            path = PATHS[(w + i) % 2]
            words = " ".join(f"w{(i * 7 + k) % 997}" for k in range(prompt_words))
            spec = RequestSpec(prompt=f"[{i}] {words}", max_tokens=output_len)
            results[path].append(await clients[path].send(model, spec))

    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        for c in clients.values():
            await c.close()
    out: dict[str, Any] = {}
    for p in PATHS:
        ok = [r for r in results[p] if r.ok]
        out[p] = {
            "ok": len(ok),
            "failed": len(results[p]) - len(ok),
            "ttft_p50_ms": percentile([r.ttft_s for r in ok], 50) * 1000,
            "ttft_p90_ms": percentile([r.ttft_s for r in ok], 90) * 1000,
            "stream_tok_s_median": statistics.median(decode_rate(r) for r in ok),
            "e2e_p50_ms": percentile([r.e2e_s for r in ok], 50) * 1000,
        }
    d, g = out["direct"], out["gateway"]
    out["added_ttft_p50_ms"] = g["ttft_p50_ms"] - d["ttft_p50_ms"]
    out["stream_rate_ratio"] = g["stream_tok_s_median"] / d["stream_tok_s_median"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=96, help="per path")
    p.add_argument("--rounds", type=int, default=6)
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
            print(
                f"paired: {args.concurrency} streams, {2 * args.requests} requests alternating "
                "direct/gateway",
                flush=True,
            )
            result = {
                "paired": asyncio.run(
                    paired(
                        urls,
                        model,
                        args.concurrency,
                        2 * args.requests,
                        args.prompt_words,
                        args.output_len,
                    )
                )
            }
            print(json.dumps(result["paired"], indent=1), flush=True)
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
