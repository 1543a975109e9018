"""vllm-ascend: vLLM with Huawei's Ascend platform plugin, so the command line is vLLM's own.

On top of the vLLM command this adapter adds what Ascend needs: `--quantization ascend` for
W8A8 weights (checkpoints quantized with msModelSlim), HCCL timeouts for replicas that span
nodes, buffer space for expert parallelism, and the NPU allocator settings. Per-node network
variables (HCCL_IF_IP and the socket NICs) depend on the node, not the replica: `node_env`
gives them to the renderers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from deepfleet.engines.vllm import VllmAdapter

W8A8_NAMES = frozenset({"int8", "w8a8"})
# HCCL waits 120 s for peers by default; stages on other nodes may still be loading weights.
MULTI_NODE_CONNECT_TIMEOUT_S = 1800
# MB per communicator; vllm-ascend's DeepSeek expert-parallel guides raise the 200 MB default.
EP_BUFFER_MB = 1024


def node_env(address: str, interface: str | None) -> dict[str, str]:
    """Variables of one node: the address HCCL and vLLM use, and the NIC of their sockets."""
    env = {"HCCL_IF_IP": address, "VLLM_HOST_IP": address}
    if interface:
        env |= {
            "HCCL_SOCKET_IFNAME": interface,
            "GLOO_SOCKET_IFNAME": interface,
            "TP_SOCKET_IFNAME": interface,
        }
    return env


@dataclass(frozen=True)
class VllmAscendAdapter:
    name: str = "vllm-ascend"
    health_path: str = "/health"
    vendor: Vendor = "ascend"
    visible_devices_env: str | None = VISIBLE_DEVICES_ENV["ascend"]
    python_module: str | None = "vllm"
    default_block_size: int = 128
    multi_node: MultiNode | None = "ray"
    load_metrics: LoadMetrics = VLLM_METRICS

    def block_size(self, engine_args: dict[str, Any]) -> int:
        return int(engine_args.get("block_size") or self.default_block_size)

    def kv_offload(self, spec: KvCacheSpec, remote_url: str | None = None) -> KvOffload | None:
        """None: vLLM's connectors are configured for GPUs only (LMCache-Ascend is another
        package)."""
        return None

    def launch_spec(self, plan: ReplicaPlan) -> LaunchSpec:
        m = plan.model
        defaults = dict(plan.engine_defaults)
        if (m.dtype or "").lower() in W8A8_NAMES:
            defaults["quantization"] = "ascend"
        spec = VllmAdapter(name=self.name).launch_spec(replace(plan, engine_defaults=defaults))
        args = {**defaults, **m.engine_args}
        env = {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True", "OMP_PROC_BIND": "false"}
        if plan.pp > 1 or args.get("distributed_executor_backend") == "ray":
            env["HCCL_CONNECT_TIMEOUT"] = str(MULTI_NODE_CONNECT_TIMEOUT_S)
        if args.get("enable_expert_parallel"):
            env["HCCL_BUFFSIZE"] = str(EP_BUFFER_MB)
        # The vLLM adapter's env ends with the model's engine_env, which must win.
        return replace(spec, env=env | spec.env)
