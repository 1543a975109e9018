"""The `cluster:` section of fleet.yaml: where the replicas run and on what devices."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deepfleet.config.base import Strict


class NetworkSpec(Strict):
    interface: str | None = Field(None, description="NIC for GLOO/NCCL/TP sockets, e.g. eth0.")


class BandwidthSpec(Strict):
    """Rates for the planner's cold-start estimate (planner/loadtime.py); unset: its defaults."""

    disk_gb_s: float | None = Field(None, gt=0, description="Model disk sequential read, GB/s.")
    lan_gb_s: float | None = Field(None, gt=0, description="File transfer between nodes, GB/s.")
    hub_mb_s: float | None = Field(None, gt=0, description="Download from the hub, MB/s.")
    engine_init_s: float | None = Field(None, ge=0, description="Engine start besides weights, s.")


class ClusterSpec(Strict):
    mode: Literal["local", "ray", "kubernetes"] = Field(
        "local", description="local: child processes here; ray: a Ray cluster; kubernetes: KubeRay."
    )
    head: str | None = Field(None, description="Head node address (ray mode).")
    nodes: int = Field(1, ge=1, description="Number of nodes in the cluster.")
    devices_per_node: int = Field(1, ge=1, description="GPUs or NPUs per node.")
    device: str = Field("CPU", description="Device type from the hardware catalog, e.g. A100-40GB.")
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    dashboard_port: int = Field(
        8265, ge=1, le=65535,
        description="Ray dashboard's port on the head (`node start`; `doctor` probes it).",
    )  # fmt: skip
    bandwidth: BandwidthSpec = Field(default_factory=BandwidthSpec)
