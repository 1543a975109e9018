"""Engines and gateways for the GPU scenarios, started as deepfleet starts them.

The engine command comes from deepfleet's own vLLM adapter (`VllmAdapter.launch_spec`), so the
run also checks that the command deepfleet builds starts the real GPU vLLM. `fake=True` swaps
the server module for `benchmarks.gpu.fake_vllm` (deepfleet's simulator behind vLLM's startup
log lines), to prove a scenario's flow on a machine without a GPU.

The gateway is `python -m deepfleet.gateway` over a fleet state file that points at the
engines (no controller), as benchmarks/overhead/run.py starts it; per-model routing comes from
the state file and KV-aware settings from kv_routing.json beside it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from benchmarks.gpu import vllm_log
from benchmarks.gpu.procs import Proc, Procs, log

from deepfleet.config.kvcache import KV_ROUTING_FILE, KvRoutingSpec
from deepfleet.config.schema import GatewaySpec, ModelSpec
from deepfleet.engines.base import ReplicaPlan
from deepfleet.engines.vllm import SERVER_MODULE, VllmAdapter
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state

FAKE_MODULE = "benchmarks.gpu.fake_vllm"
GPU_BLOCK_SIZE = 16
# NVLink multicast stays off on the lent machines (device/KINDS.md); harmless elsewhere.
SAFE_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    # /reset_prefix_cache (the routing scenario empties caches between policies)
    "VLLM_SERVER_DEV_MODE": "1",
}


@dataclass
class EngineSpec:
    name: str  # served model name, also the replica id's stem
    model_dir: str
    max_model_len: int
    gpu_memory_utilization: float = 0.92
    kv_cache_memory_bytes: int | None = None
    kv_events_port: int | None = None
    engine_args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    fake: bool = False
    port: int = field(default_factory=free_port)
    tp: int = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def engine_argv(spec: EngineSpec) -> tuple[list[str], dict[str, str]]:
    args = {"load_format": "dummy", **spec.engine_args}
    if spec.kv_cache_memory_bytes is not None:
        args["kv_cache_memory_bytes"] = spec.kv_cache_memory_bytes
    model = ModelSpec(
        name=spec.name, source=spec.model_dir, engine="vllm", engine_args=args,
        engine_env={**SAFE_ENV, **spec.env},
    )  # fmt: skip
    plan = ReplicaPlan(
        model=model, replica_id=f"{spec.name}-{spec.port}", model_path=spec.model_dir,
        host="127.0.0.1", port=spec.port, kv_events_port=spec.kv_events_port,
        max_model_len=spec.max_model_len, gpu_memory_utilization=spec.gpu_memory_utilization,
        python=sys.executable, tp=spec.tp,
    )  # fmt: skip
    launch = VllmAdapter().launch_spec(plan)
    argv = list(launch.argv)
    if spec.fake:
        argv[argv.index(SERVER_MODULE)] = FAKE_MODULE
    return argv, launch.env


def start_engine(procs: Procs, spec: EngineSpec, label: str) -> Proc:
    argv, env = engine_argv(spec)
    return procs.start(label, argv, env)


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as r:
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def wait_ready(proc: Proc, url: str, within_s: float, path: str = "/v1/models") -> float:
    """Seconds until `url + path` answers 200; raises when the process dies, its log shows a
    failure, or `within_s` passes."""
    start = time.monotonic()
    last_note = start
    async with aiohttp.ClientSession() as session:
        while True:
            if await _get(session, url + path) == 200:
                took = time.monotonic() - start
                log(f"{proc.name} ready after {took:.0f} s")
                return took
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited ({proc.popen.returncode}): "
                    f"{vllm_log.failure(proc.text()) or proc.text()[-600:]}"
                )
            if time.monotonic() - start > within_s:
                raise TimeoutError(f"{proc.name} not ready in {within_s:.0f} s")
            if time.monotonic() - last_note > 30:
                last_note = time.monotonic()
                tail = [ln for ln in proc.text().splitlines() if ln.strip()][-1:] or [""]
                log(f"  waiting for {proc.name}: {tail[0][-160:]}")
            await asyncio.sleep(1.0)


async def wait_log(proc: Proc, needle: str, within_s: float) -> bool:
    """Whether `needle` appears in the process's log within `within_s` (False if it dies)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if needle in proc.text():
            return True
        if not proc.alive():
            return False
        await asyncio.sleep(1.0)
    return False


def write_fleet(
    state_dir: Path,
    model: str,
    routing: str,
    engines: Sequence[EngineSpec],
    *,
    tokenizer: str | None,
    max_model_len: int,
    kv: KvRoutingSpec | None = None,
) -> Path:
    """A fleet state (no controller) for one model over `engines`, with the gateway's
    settings (gateway.json) and KV routing settings (kv_routing.json) beside it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state = FleetState(
        controller_pid=os.getpid(),
        gateway_url="",
        models=[ModelRoute(model, routing, max_model_len, tokenizer, GPU_BLOCK_SIZE)],
        replicas=[
            ReplicaStatus(
                replica_id=f"{model}-{i}", model=model, engine="vllm", url=e.url,
                state=ReplicaState.READY, ready_at=time.time(), kv_events_port=e.kv_events_port,
            )
            for i, e in enumerate(engines)
        ],
    )  # fmt: skip
    path = state_dir / "fleet.json"
    write_state(path, state)
    (state_dir / KV_ROUTING_FILE).write_text((kv or KvRoutingSpec()).model_dump_json())
    (state_dir / "gateway.json").write_text(
        GatewaySpec(keys_db=state_dir / "keys.db").model_dump_json()
    )
    return path


def start_gateway(procs: Procs, label: str, state_file: Path, workers: int) -> tuple[Proc, str]:
    port = free_port()
    argv = [
        sys.executable, "-m", "deepfleet.gateway", "--state-file", str(state_file),
        "--settings", str(state_file.parent / "gateway.json"), "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    return procs.start(label, argv), f"http://127.0.0.1:{port}"


async def metrics_text(url: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r,
    ):
        return await r.text()
