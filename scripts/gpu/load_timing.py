#!/usr/bin/env python3
"""Cold load time of a 7B-class checkpoint with vLLM's loaders, on the lent GPU (issue 21).

Run on the device (scripts/gpu/README.md, "load timing"):
    python3 scripts/gpu/load_timing.py --config DIR --work /tmp/lt --out $OUT

1. Random weights for the model of DIR/config.json (Qwen2 architecture, bf16), written as
   safetensors shards of ~4 GB with an index, like a hub checkpoint, fsynced.
2. The disk's sequential read rate: page cache dropped, the shards read once in 16 MiB
   blocks (buffered, as vLLM's loaders read) and one shard with O_DIRECT (dd).
3. For each load format: page cache dropped, `vllm.LLM(..., load_format=F, enforce_eager)`
   in a fresh process; vLLM's own "Loading weights took" and "Model loading took" lines, and the
   process's time to a first generated token.
4. deepfleet's planner estimate (planner/loadtime.py) from the measured disk rate, against the
   measured default loader.
Writes OUT/load_timing.json and OUT/load_timing.log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SHARD_BYTES = 4 << 30
CHILD = r"""
import sys, time, json
t0 = time.monotonic()
from vllm import LLM, SamplingParams
llm = LLM(model=sys.argv[1], load_format=sys.argv[2], enforce_eager=True, max_model_len=1024,
          gpu_memory_utilization=0.5, tokenizer=sys.argv[1])
t1 = time.monotonic()
out = llm.generate(["Hello"], SamplingParams(max_tokens=4, temperature=0))
print("RESULT " + json.dumps({"ready_s": t1 - t0, "first_token_s": time.monotonic() - t0,
      "text": out[0].outputs[0].text}), flush=True)
"""


def log(msg: str, out: Path) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    with (out / "load_timing.log").open("a") as f:
        f.write(line + "\n")


def shapes(c: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    d = h // heads
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (heads * d, h)),
            (p + "self_attn.q_proj.bias", (heads * d,)),
            (p + "self_attn.k_proj.weight", (kv * d, h)),
            (p + "self_attn.k_proj.bias", (kv * d,)),
            (p + "self_attn.v_proj.weight", (kv * d, h)),
            (p + "self_attn.v_proj.bias", (kv * d,)),
            (p + "self_attn.o_proj.weight", (h, heads * d)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    out.append(("model.norm.weight", (h,)))
    if not c.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (v, h)))
    return out


def write_checkpoint(config_dir: Path, model: Path, out: Path) -> int:
    import torch
    from safetensors.torch import save_file

    model.mkdir(parents=True, exist_ok=True)
    for f in config_dir.iterdir():
        if f.is_file():
            (model / f.name).write_bytes(f.read_bytes())
    config = json.loads((config_dir / "config.json").read_text())
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes(config):
        n = 2 * int(torch.Size(shape).numel())
        if size + n > SHARD_BYTES and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += n
    weight_map, total = {}, 0
    gen = torch.Generator(device="cuda").manual_seed(0)
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {
            name: (torch.randn(shape, generator=gen, device="cuda", dtype=torch.bfloat16) * 0.02)
            .cpu()
            .contiguous()
            for name, shape in group
        }
        save_file(tensors, str(model / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name, _ in group})
        total += (model / fname).stat().st_size
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    os.sync()
    log(f"wrote {len(groups)} shards, {total:,} bytes", out)
    return total


def drop_cache(model: Path) -> str:
    """Evict the checkpoint from the page cache; returns how."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        how = "drop_caches"
    except OSError:
        how = "fadvise"
    for f in model.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return how


def read_rate(model: Path) -> dict[str, Any]:
    shards = sorted(model.glob("*.safetensors"))
    how = drop_cache(model)
    t0, n = time.monotonic(), 0
    for s in shards:
        with s.open("rb", buffering=0) as f:
            while chunk := f.read(16 << 20):
                n += len(chunk)
    buffered = n / (time.monotonic() - t0)
    drop_cache(model)
    dd = subprocess.run(
        ["dd", f"if={shards[0]}", "of=/dev/null", "bs=16M", "iflag=direct"],
        capture_output=True, text=True,
    )  # fmt: skip
    m = re.search(r"(\d+) bytes.*?copied, ([\d.]+) s", dd.stderr)
    direct = int(m.group(1)) / float(m.group(2)) if m else None
    return {"evicted_by": how, "buffered_bps": buffered, "direct_bps": direct, "bytes": n}


def load(model: Path, fmt: str, out: Path, timeout: float, cold: bool = True) -> dict[str, Any]:
    how = drop_cache(model) if cold else "warm"
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            [sys.executable, "-c", CHILD, str(model), fmt],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        text, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as exc:
        text, rc = f"{exc.stdout or ''}{exc.stderr or ''}timeout", -1
    wall = time.monotonic() - t0
    (out / f"vllm-{fmt}{'' if cold else '-warm'}.log").write_text(str(text)[-60000:])
    res: dict[str, Any] = {"format": fmt, "cache": how, "rc": rc, "wall_s": round(wall, 1)}
    if m := re.search(r"Loading weights took ([\d.]+) seconds", text):
        res["weights_s"] = float(m.group(1))
    if m := re.search(r"Model loading took ([\d.]+) GiB (?:memory )?and ([\d.]+) seconds", text):
        res["model_gib"], res["model_load_s"] = float(m.group(1)), float(m.group(2))
    if m := re.search(r"RESULT (\{.*\})", text):
        res.update(json.loads(m.group(1)))
    else:
        res["error"] = [ln for ln in text.splitlines() if "Error" in ln][-3:]
    log(f"{fmt} ({how}): {json.dumps(res)}", out)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lt"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--formats", default="auto,fastsafetensors,runai_streamer,instanttensor")
    ap.add_argument("--timeout", type=float, default=150)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.work / "model"
    t0 = time.monotonic()
    total = write_checkpoint(args.config, model, args.out)
    result: dict[str, Any] = {"checkpoint_bytes": total, "write_s": time.monotonic() - t0}
    result["disk"] = read_rate(model)
    log(f"disk: {json.dumps(result['disk'])}", args.out)
    result["loads"] = [load(model, f, args.out, args.timeout) for f in args.formats.split(",")]
    result["loads"].append(load(model, "auto", args.out, args.timeout, cold=False))
    from deepfleet.planner.loadtime import Bandwidth, cold_start

    bw = Bandwidth(disk_bps=result["disk"]["buffered_bps"])
    est = cold_start(total, 1, 1, 1, 1, bw)
    cold = [r for r in result["loads"] if r["cache"] != "warm"]
    default = next((r for r in cold if r["format"] == "auto"), {})
    result["planner"] = {
        "disk_bps": bw.disk_bps,
        "load_s_estimate": est.load_s,
        "measured_default_weights_s": default.get("weights_s"),
        "error": (est.load_s / default["weights_s"] - 1) if default.get("weights_s") else None,
    }
    result["gpu"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip()
    (args.out / "load_timing.json").write_text(json.dumps(result, indent=1))
    log(f"planner: {json.dumps(result['planner'])}", args.out)


if __name__ == "__main__":
    main()
