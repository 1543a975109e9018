#!/usr/bin/env python3
"""Cold load of a 7B-class checkpoint into GPU memory through the library behind each of vLLM's
load formats, called as vLLM 0.26's weight iterators call it (weight_utils.py), in one device call.

Why not vLLM itself: vLLM's ~380 MB of wheels take seven device calls to reach the lent machine
(shared/gpu/README.md), more device time than this measurement had; the weight-reading part of
each load format is one library call that needs only its own small wheel. `load_timing.py`
beside this file does the same through `vllm.LLM` when vLLM is installed there.

    auto (vLLM's default)  safetensors.safe_open(..., "pt") per shard, get_tensor per tensor
                           (mmap, lazy), then a copy to the GPU (the parameter's copy_)
    fastsafetensors        fastsafetensors.parallel_loader.ParallelLoader(SingleGroup(), files,
                           device="cuda:0", nogds=False, falling back to nogds=True)
    runai_streamer         runai_model_streamer.SafetensorsStreamer().stream_files(files,
                           device="cpu"), get_tensors(), clone, to the GPU
    instanttensor          instanttensor.safe_open(files, "pt", device=0, copy=True)

Each starts with the page cache dropped and ends with torch.cuda.synchronize(); the CUDA context
is made before the clock starts. Then the planner's estimate from the measured disk rate.
    python3 scripts/gpu/load_libs.py --config DIR --out $OUT [--work /tmp/lt]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from load_timing import drop_cache, log, read_rate, write_checkpoint

Loader = Callable[[list[str]], Iterator[tuple[str, Any]]]


def default_iter(files: list[str]) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    for f in files:
        with safe_open(f, framework="pt") as st:
            for name in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, st.get_tensor(name).to("cuda")


def fastsafetensors_iter(files: list[str]) -> Iterator[tuple[str, Any]]:
    from fastsafetensors import SingleGroup
    from fastsafetensors.parallel_loader import ParallelLoader

    for nogds in (False, True):
        try:
            pl = ParallelLoader(pg=SingleGroup(), hf_weights_files=files, queue_size=2,
                                use_tqdm_on_load=False, device="cuda:0", nogds=nogds)  # fmt: skip
            try:
                yield from pl.iterate_weights()
                return
            finally:
                pl.close()
        except RuntimeError as exc:
            if nogds or "gds" not in str(exc).lower():
                raise


def runai_iter(files: list[str]) -> Iterator[tuple[str, Any]]:
    from runai_model_streamer import SafetensorsStreamer

    with SafetensorsStreamer() as streamer:
        streamer.stream_files(files, device="cpu", is_distributed=False)
        for name, tensor in streamer.get_tensors():
            yield name, tensor.clone().to("cuda")


def instanttensor_iter(files: list[str]) -> Iterator[tuple[str, Any]]:
    import instanttensor

    with instanttensor.safe_open(files, framework="pt", device=0, copy=True) as f:
        for name in f.keys():  # noqa: SIM118
            yield name, f.get_tensor(name)


LOADERS: dict[str, Loader] = {
    "auto": default_iter,
    "fastsafetensors": fastsafetensors_iter,
    "runai_streamer": runai_iter,
    "instanttensor": instanttensor_iter,
}


def measure(name: str, model: Path, out: Path, cold: bool = True) -> dict[str, Any]:
    import torch

    files = sorted(str(p) for p in model.glob("*.safetensors"))
    how = drop_cache(model) if cold else "warm"
    held: list[Any] = []
    res: dict[str, Any] = {"format": name, "cache": how}
    t0 = time.monotonic()
    try:
        n = 0
        for _, tensor in LOADERS[name](files):
            held.append(tensor)
            n += tensor.numel() * tensor.element_size()
        torch.cuda.synchronize()
        res |= {"seconds": time.monotonic() - t0, "bytes": n, "tensors": len(held)}
        res["gb_per_s"] = n / res["seconds"] / 1e9
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"[:500]
        (out / f"error-{name}.txt").write_text(traceback.format_exc())
    del held
    torch.cuda.empty_cache()
    log(f"{name} ({how}): {json.dumps(res)}", out)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lt"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--formats", default=",".join(LOADERS))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.empty(1, device="cuda")  # the CUDA context, outside every timing
    model = args.work / "model"
    t0 = time.monotonic()
    total = write_checkpoint(args.config, model, args.out)
    result: dict[str, Any] = {"checkpoint_bytes": total, "write_s": time.monotonic() - t0,
                              "gpu": torch.cuda.get_device_name(0)}  # fmt: skip
    result["disk"] = read_rate(model)
    log(f"disk: {json.dumps(result['disk'])}", args.out)
    result["loads"] = [measure(f, model, args.out) for f in args.formats.split(",")]
    result["loads"].append(measure("auto", model, args.out, cold=False))
    disk_bps = result["disk"]["buffered_bps"]
    try:
        from deepfleet.planner.loadtime import Bandwidth, cold_start

        # one node holding one replica: load_s = checkpoint bytes / disk rate
        load_s = cold_start(total, 1, 1, 1, 1, Bandwidth(disk_bps=disk_bps)).load_s
    except ImportError as exc:  # deepfleet's imports missing on the device
        log(f"planner import failed ({exc}); its formula: bytes / disk rate", args.out)
        load_s = total / disk_bps
    default = next(r for r in result["loads"] if r["format"] == "auto")
    result["planner"] = {
        "disk_bps": disk_bps,
        "load_s_estimate": load_s,
        "measured_default_s": default.get("seconds"),
        "error": load_s / default["seconds"] - 1 if default.get("seconds") else None,
    }
    log(f"planner: {json.dumps(result['planner'])}", args.out)
    (args.out / "load_libs.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
