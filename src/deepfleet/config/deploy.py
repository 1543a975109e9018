"""The `deploy` section of fleet.yaml: what the renderers (`deepfleet render k8s|compose|ascend`)
need beyond the cluster and the models: the nodes' addresses and NICs, images, volumes,
Kubernetes options and the Ascend NPU address plan.

Checks that need only this section are validators here; checks against `cluster` and `models`
(node count, devices per node, NPU address overlaps) are in config/checks.py, which
config.load.validate() calls so that every problem is reported with its field path.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Literal

from pydantic import Field, model_validator

from deepfleet.config.base import Strict
from deepfleet.config.cluster import ClusterSpec

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

# The mounts of the planning document's MindIE `docker run`: driver, firmware, tools, logs.
ASCEND_MOUNTS = (
    "/usr/local/dcmi:/usr/local/dcmi",
    "/usr/bin/hccn_tool:/usr/bin/hccn_tool",
    "/usr/local/sbin/npu-smi:/usr/local/sbin/npu-smi",
    "/usr/local/Ascend/driver:/usr/local/Ascend/driver",
    "/usr/local/Ascend/firmware:/usr/local/Ascend/firmware",
    "/etc/hccn.conf:/etc/hccn.conf",
    "/var/log/npu/:/usr/slog",
    "/sys/fs/cgroup:/sys/fs/cgroup:ro",
)
ASCEND_DEVICES = ("/dev/davinci_manager", "/dev/hisi_hdc", "/dev/devmm_svm")


class NpuAddressPlan(Strict):
    """Addresses of one node's NPU NICs (Ascend): `base` or an explicit list."""

    base: IPv4Address | None = Field(
        None, description="Address of NPU 0; NPU i gets base + i (e.g. 10.197.90.10 -> .10-.17)."
    )
    addresses: list[IPv4Address] | None = Field(
        None, description="One address per NPU, in NPU order; instead of `base`."
    )
    netmask: IPv4Address | None = Field(
        None, description="Netmask of these NPUs; None: deploy.ascend.netmask."
    )
    gateway: IPv4Address | None = Field(
        None, description="Gateway of these NPUs; None: deploy.ascend.gateway."
    )

    @model_validator(mode="after")
    def _one_source(self) -> NpuAddressPlan:
        if (self.base is None) == (self.addresses is None):
            raise ValueError("give either `base` or `addresses`")
        return self

    def expand(self, count: int) -> list[IPv4Address]:
        """The address of each of `count` NPUs."""
        if self.addresses is not None:
            return list(self.addresses)
        assert self.base is not None
        return [self.base + i for i in range(count)]


class NodeSpec(Strict):
    """One machine of the cluster; the first entry is the Ray head."""

    name: str = Field(pattern=DNS_LABEL, description="Host name, used in file and script names.")
    address: IPv4Address = Field(
        description="Node IP that Ray, NCCL/HCCL and the engines use (VLLM_HOST_IP)."
    )
    interface: str | None = Field(
        None, description="NIC that carries `address`; None: cluster.network.interface."
    )
    npu: NpuAddressPlan | None = Field(
        None, description="Ascend only: the addresses `hccn_tool` gives this node's NPUs."
    )


class ImagesSpec(Strict):
    vllm: str = Field(
        "vllm/vllm-openai:v0.32.0",
        description="Official vLLM image: engines and Ray nodes of the container setup.",
    )
    deepfleet: str = Field(
        "deepfleet:0.1.0",
        description="deepfleet on top of the vLLM image (controller, gateway; KubeRay pods). "
        "The rendered Dockerfile builds it.",
    )
    open_webui: str = Field("ghcr.io/open-webui/open-webui:main", description="Open-WebUI.")
    prometheus: str = Field("prom/prometheus:v2.53.0", description="Prometheus (compose).")
    grafana: str = Field("grafana/grafana:11.1.0", description="Grafana (compose).")
    redis: str = Field(
        "redis:7.4", description="Redis, the shared KV store with kv_cache.remote.kind: redis."
    )
    vllm_ascend: str = Field(
        "quay.io/ascend/vllm-ascend:v0.11.0rc0", description="vllm-ascend image (Ascend nodes)."
    )
    mindie: str = Field(
        "swr.cn-southwest-2.myhuaweicloud.com/ei-mindie/mindie:"
        "2.0.T3-800I-A2-py311-openeuler24.03-lts",
        description="MindIE image (Ascend nodes), as in the planning document.",
    )


class Toleration(Strict):
    key: str | None = Field(None, description="Taint key; None with Exists: every taint.")
    operator: Literal["Exists", "Equal"] = Field("Exists", description="Exists or Equal.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect; None: all."
    )


class ModelVolumeSpec(Strict):
    """Where the pods find `deploy.model_dir`: a PersistentVolumeClaim or a host folder."""

    claim: str = Field("deepfleet-models", pattern=DNS_LABEL, description="PVC name.")
    create: bool = Field(True, description="Render the PVC (else it must exist).")
    storage_class: str | None = Field(None, description="StorageClass; None: the default.")
    size_gib: int | None = Field(
        None, ge=1, description="PVC size; None: the checkpoints' size from the plan + 10%."
    )
    access_mode: Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"] = Field(
        "ReadWriteMany", description="Every GPU pod mounts it, so usually ReadWriteMany."
    )
    host_path: str | None = Field(
        None, description="Use this folder on every node instead of a PVC."
    )
    download: bool = Field(
        False,
        description="Render a Job that downloads each model into the volume "
        "(model_dir/<hub id>) before the engines start.",
    )
    hf_token_secret: str | None = Field(
        None, description="Secret with key HF_TOKEN for gated models (download Job)."
    )


class KubernetesSpec(Strict):
    namespace: str = Field("deepfleet", pattern=DNS_LABEL, description="Namespace of it all.")
    name: str = Field(
        "deepfleet", pattern=DNS_LABEL, description="RayCluster name; prefix of other objects."
    )
    ray_version: str = Field("2.60.0", description="Ray version inside the images (KubeRay).")
    gpu_resource: str = Field(
        "nvidia.com/gpu", description="Extended resource of one device (huawei.com/Ascend910)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the GPU worker pods need."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the GPU worker pods tolerate."
    )
    head_node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the head pod (controller, gateway) needs."
    )
    head_cpu: int = Field(8, ge=1, description="CPU cores of the head pod (gateway workers).")
    head_memory_gib: int = Field(32, ge=1, description="Memory of the head pod.")
    gateway_cpu: int = Field(
        4, ge=1, description="CPU cores of a gateway pod (gateway.instances > 1: one per pod)."
    )
    gateway_memory_gib: int = Field(8, ge=1, description="Memory of a gateway pod.")
    state_env_secret: str | None = Field(
        None,
        pattern=DNS_LABEL,
        description="Secret whose keys become environment variables of the head and gateway "
        "pods: how they reach gateway.state's PostgreSQL (the variable dsn_env names, or "
        "PGPASSWORD). Needed with backend postgres unless the DSN needs no password.",
    )
    worker_cpu: int | None = Field(None, ge=1, description="CPU limit of a worker pod.")
    worker_memory_gib: int | None = Field(None, ge=1, description="Memory limit of a worker pod.")
    host_network: bool = Field(
        False,
        description="Worker and head pods use the node's network (RDMA/400G NICs); the NCCL, "
        "GLOO and TP socket NIC is then cluster.network.interface.",
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="Service type of the gateway and Open-WebUI."
    )
    service_monitor: bool = Field(
        False, description="Render a prometheus-operator ServiceMonitor for the gateway."
    )
    state_size_gib: int = Field(
        1, ge=1, description="PVC of the head's state dir (API keys, fleet state)."
    )
    state_storage_class: str | None = Field(None, description="StorageClass of the state PVC.")
    model_volume: ModelVolumeSpec = Field(default_factory=ModelVolumeSpec)
    load_gib_per_s: float = Field(
        0.1,
        gt=0,
        description="Rate one node reads weights from the model volume; sizes the startup "
        "probe (the planning document's 40-50 min for R1 is about 0.1 GiB/s).",
    )


class MonitoringSpec(Strict):
    prometheus: bool = Field(True, description="Run Prometheus (compose).")
    host: str = Field(
        "127.0.0.1",
        description="Address compose publishes Prometheus and Grafana on; loopback unless set "
        "(Prometheus has no login).",
    )
    prometheus_port: int = Field(9090, ge=1, le=65535, description="Prometheus host port.")
    grafana: bool = Field(True, description="Run Grafana with Prometheus as data source.")
    grafana_port: int = Field(3001, ge=1, le=65535, description="Grafana host port.")
    scrape_interval_s: int = Field(15, ge=1, description="Prometheus scrape interval.")


class OpenWebUiSpec(Strict):
    enabled: bool = Field(True, description="Run Open-WebUI pointed at the gateway.")
    port: int = Field(3000, ge=1, le=65535, description="Host port (compose) / Service port.")


class AscendSpec(Strict):
    netmask: IPv4Address = Field(
        IPv4Address("255.255.255.0"), description="NPU netmask unless a node's npu sets one."
    )
    gateway: IPv4Address | None = Field(
        None, description="NPU gateway unless a node's npu sets one."
    )
    tls: bool = Field(False, description="NPU TLS switch (`hccn_tool -tls -s enable 0|1`).")
    devices: list[str] = Field(
        default_factory=lambda: list(ASCEND_DEVICES),
        description="Device files besides /dev/davinci0..N-1 passed to the container.",
    )
    mounts: list[str] = Field(
        default_factory=lambda: list(ASCEND_MOUNTS),
        description="host:container[:ro] mounts of driver, tools and logs.",
    )
    container_name: str = Field(
        "deepfleet-engine", pattern=DNS_LABEL, description="Name of the engine container."
    )


class DeploySpec(Strict):
    nodes: list[NodeSpec] = Field(
        default_factory=list,
        description="Every node, the Ray head first (cluster.head); needed by the multi-host "
        "and Ascend renderers.",
    )
    model_dir: str = Field(
        "/models",
        pattern=r"^/",
        description="Host folder holding the weights; mounted at the same path in containers.",
    )
    hf_cache: str = Field(
        "/root/.cache/huggingface",
        pattern=r"^/",
        description="Host folder for models given as hub ids (engines download into it).",
    )
    shm_size_gib: int = Field(64, ge=1, description="Shared memory of engine containers/pods.")
    ray_port: int = Field(6379, ge=1, le=65535, description="Ray GCS port on the head.")
    engine_port: int = Field(
        8100, ge=1, le=65535, description="Port of the first engine; replica k gets +k."
    )
    images: ImagesSpec = Field(default_factory=ImagesSpec)
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    open_webui: OpenWebUiSpec = Field(default_factory=OpenWebUiSpec)
    ascend: AscendSpec = Field(default_factory=AscendSpec)

    @model_validator(mode="after")
    def _unique_nodes(self) -> DeploySpec:
        for attr in ("name", "address"):
            seen: set[object] = set()
            for node in self.nodes:
                value = getattr(node, attr)
                if value in seen:
                    raise ValueError(f"node {attr} {str(value)!r} appears twice in deploy.nodes")
                seen.add(value)
        return self

    def node_interface(self, node: NodeSpec, cluster: ClusterSpec) -> str | None:
        """The NIC of `node`: its own, else the cluster's."""
        return node.interface or cluster.network.interface
