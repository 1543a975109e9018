"""MindIE Service (Huawei's inference server for Ascend): a JSON config file, not flags.

`config(plan)` builds MindIE's config.json from the replica plan (service address and port,
NPUs, context, batch sizes from the planner); `launch_spec` starts `mindieservice_daemon`
after writing that JSON (carried in the environment, so the adapter stays stateless) to
MIES_CONFIG_JSON_PATH. The OpenAI routes (/v1/chat/completions, /v1/completions) and /health
are served on `port`: the config leaves out managementPort and metricsPort, which then default
to it.

A replica over several nodes (pp > 1) runs MindIE's multi-node mode: every node starts the same
daemon with the same config; RANKTABLEFILE (the NPU addresses of every node) and
MIES_CONTAINER_IP (this node) are per node, set by the Ascend renderer.

`engine_args` override config.json fields by their MindIE names (e.g. `maxBatchSize: 64`,
`npuMemSize: 40`); an unknown name is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines.base import (
    VISIBLE_DEVICES_ENV,
    KvOffload,
    LaunchSpec,
    MultiNode,
    ReplicaPlan,
    Vendor,
)
from deepfleet.engines.load import VLLM_METRICS, LoadMetrics

MINDIE_HOME = "/usr/local/Ascend/mindie/latest/mindie-service"
SET_ENV_SCRIPTS = (
    "/usr/local/Ascend/ascend-toolkit/set_env.sh",
    "/usr/local/Ascend/nnal/atb/set_env.sh",
    "/usr/local/Ascend/atb-models/set_env.sh",
    "/usr/local/Ascend/mindie/set_env.sh",
)
CONFIG_ENV = "DEEPFLEET_MINDIE_CONFIG"
MULTI_NODE_PORT = 1120
CACHE_BLOCK = 128
# MindIE's documented recommendation for maxLinkNum (its default, 1000, is rarely reachable).
MAX_LINKS = 300


def _sections(config: dict[str, Any]) -> list[dict[str, Any]]:
    backend = config["BackendConfig"]
    deploy = backend["ModelDeployConfig"]
    return [
        config["ServerConfig"],
        backend,
        deploy,
        deploy["ModelConfig"][0],
        backend["ScheduleConfig"],
    ]


def _override(config: dict[str, Any], args: dict[str, Any]) -> None:
    sections = _sections(config)
    for key, value in args.items():
        owners = [s for s in sections if key in s and not isinstance(s[key], dict | list)]
        if not owners:
            known = sorted(k for s in sections for k, v in s.items() if not isinstance(v, dict))
            raise ValueError(
                f"engine_args key {key!r} is not a MindIE config.json field; known: "
                + ", ".join(known)
            )
        owners[0][key] = value


@dataclass(frozen=True)
class MindieAdapter:
    name: str = "mindie"
    health_path: str = "/health"
    vendor: Vendor = "ascend"
    visible_devices_env: str | None = VISIBLE_DEVICES_ENV["ascend"]
    python_module: str | None = None  # a native daemon
    default_block_size: int = CACHE_BLOCK
    multi_node: MultiNode | None = "rank-table"
    # Read under vLLM's names; not checked against a MindIE server.
    load_metrics: LoadMetrics = VLLM_METRICS

    def block_size(self, engine_args: dict[str, Any]) -> int:
        return int(engine_args.get("cacheBlockSize") or self.default_block_size)

    def kv_offload(self, spec: KvCacheSpec, remote_url: str | None = None) -> KvOffload | None:
        return None

    def config(self, plan: ReplicaPlan) -> dict[str, Any]:
        """MindIE's config.json for this replica (one node's share of NPUs: tp)."""
        m = plan.model
        seq_len = plan.max_model_len or 4096
        hints = plan.engine_defaults
        batch = int(plan.max_num_seqs or hints.get("max_num_seqs", 64))
        prefill_tokens = int(hints.get("max_num_batched_tokens", 8192))
        config: dict[str, Any] = {
            "Version": "1.0.0",
            "LogConfig": {"logLevel": "Info", "logPath": "logs/mindie-server.log"},
            "ServerConfig": {
                "ipAddress": plan.host,
                "port": plan.port,
                "allowAllZeroIpListening": False,
                "maxLinkNum": MAX_LINKS,
                "httpsEnabled": False,
                "interCommTLSEnabled": False,
            },
            "BackendConfig": {
                "backendName": "mindieservice_llm_engine",
                "modelInstanceNumber": 1,
                "npuDeviceIds": [list(range(plan.tp))],
                "tokenizerProcessNumber": 8,
                "multiNodesInferEnabled": plan.pp > 1,
                "multiNodesInferPort": MULTI_NODE_PORT,
                "interNodeTLSEnabled": False,
                "ModelDeployConfig": {
                    "maxSeqLen": seq_len,
                    "maxInputTokenLen": seq_len,
                    "truncation": False,
                    "ModelConfig": [
                        {
                            "modelInstanceType": "Standard",
                            "modelName": m.name,
                            "modelWeightPath": plan.model_path,
                            "worldSize": plan.tp,
                            "cpuMemSize": 5,
                            "npuMemSize": -1,
                            "backendType": "atb",
                            "trustRemoteCode": m.trust_remote_code,
                        }
                    ],
                },
                "ScheduleConfig": {
                    "templateType": "Standard",
                    "templateName": "Standard_LLM",
                    "cacheBlockSize": CACHE_BLOCK,
                    "maxPrefillBatchSize": min(batch, 50),
                    "maxPrefillTokens": max(prefill_tokens, seq_len),
                    "prefillTimeMsPerReq": 150,
                    "prefillPolicyType": 0,
                    "decodeTimeMsPerReq": 50,
                    "decodePolicyType": 0,
                    "maxBatchSize": batch,
                    "maxIterTimes": seq_len,
                    "maxPreemptCount": 0,
                    "supportSelectBatch": False,
                    "maxQueueDelayMicroseconds": 5000,
                },
            },
        }
        _override(config, m.engine_args)
        return config

    def config_path(self, plan: ReplicaPlan) -> str:
        return f"/tmp/deepfleet-mindie-{plan.replica_id}.json"

    def launch_spec(self, plan: ReplicaPlan) -> LaunchSpec:
        sources = "; ".join(f"source {s}" for s in SET_ENV_SCRIPTS)
        # MindIE refuses a config file others may write: umask 027 gives 0640.
        script = (
            f"{sources}; umask 027; "
            f'printf "%s" "${CONFIG_ENV}" > "$MIES_CONFIG_JSON_PATH" && '
            f"cd {MINDIE_HOME} && exec ./bin/mindieservice_daemon"
        )
        env = {
            CONFIG_ENV: json.dumps(self.config(plan), separators=(",", ":")),
            "MIES_CONFIG_JSON_PATH": self.config_path(plan),
            "MINDIE_LOG_TO_STDOUT": "1",
            "OMP_NUM_THREADS": "1",
        }
        if plan.gpu_memory_utilization:
            env["NPU_MEMORY_FRACTION"] = f"{plan.gpu_memory_utilization:.2f}"
        if plan.pp > 1:
            env |= {
                "WORLD_SIZE": str(plan.tp * plan.pp),
                "ATB_LLM_HCCL_ENABLE": "1",
                "ATB_LLM_COMM_BACKEND": "hccl",
                "HCCL_CONNECT_TIMEOUT": "7200",
                "HCCL_EXEC_TIMEOUT": "0",
            }
        env.update(plan.env_defaults)
        env.update(plan.model.engine_env)
        return LaunchSpec(argv=["/bin/bash", "-c", script], env=env)
