"""The Kubernetes bundle: kustomize builds it, every object validates offline (Kubernetes 1.32
schemas, KubeRay's RayCluster and prometheus-operator's ServiceMonitor), and the RayCluster is
sized and probed from the plan."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from deepfleet.deploy.plan import LOAD_OVERHEAD_S, LOAD_SAFETY, DeployError, deploy_plan
from deepfleet.gateway.remote import check
from tests.deploy.conftest import CASES, config_of, render, render_case, run, tool
from tests.deploy.manifests import validate, validate_crd

pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

GiB = 1 << 30


def kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl")
    done = run([kubectl, "kustomize", str(folder)])
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("k8s")
    render_case(CASES["r1-8x8-k8s"]).write(folder)
    return kustomize(folder)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_kustomize_builds_every_object(built: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in built)
    assert kinds == sorted(
        [
            "Namespace",
            "Secret",  # fleet.yaml
            "Secret",  # Ray's token
            "Secret",  # Open-WebUI's admin password
            "NetworkPolicy",
            "NetworkPolicy",
            "NetworkPolicy",
            "RayCluster",
            "Service",
            "Service",
            "PersistentVolumeClaim",
            "PersistentVolumeClaim",
            "PersistentVolumeClaim",
            "Job",
            "ServiceMonitor",
            "Deployment",
        ]
    )
    assert {d["metadata"].get("namespace") for d in built if d["kind"] != "Namespace"} == {
        "deepseek"
    }


def test_every_object_validates_offline(built: list[dict[str, Any]]) -> None:
    for doc in built:
        validate(doc)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("RayCluster", ["spec", "headGroupSpec", "rayStartParams", "port"], 6379),
        ("RayCluster", ["spec", "workerGroupSpecs", 0, "groupNam"], "gpu"),
        ("RayCluster", ["spec", "headGroupSpec", "template", "spec", "containers", 0, "imag"], "x"),
        ("ServiceMonitor", ["spec", "endpoints", 0, "interval"], "15 seconds"),
        ("Deployment", ["spec", "replicas"], "one"),
    ],
    ids=["param-not-string", "typo-in-group", "typo-in-container", "bad-interval", "bad-replicas"],
)
def test_validation_catches_mistakes(
    built: list[dict[str, Any]], kind: str, path: list[Any], value: Any
) -> None:
    doc = copy.deepcopy(by_kind(built, kind)[0])
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_raycluster_requires_head() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_crd({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {}, "spec": {}})


def test_workers_sized_from_the_layout(built: list[dict[str, Any]]) -> None:
    # The reference plan: 1 replica of tp 8 x pp 4 on 8-GPU nodes takes 4 GPU pods.
    cluster = by_kind(built, "RayCluster")[0]
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 4
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert group["rayStartParams"]["num-gpus"] == "8"
    spec = group["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "deepfleet-models"


def test_startup_probe_sized_from_the_model(built: list[dict[str, Any]]) -> None:
    cluster = by_kind(built, "RayCluster")[0]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    startup = head["startupProbe"]
    allowed = startup["periodSeconds"] * startup["failureThreshold"]
    # R1 in FP8 (673 GB) over 4 PP stages, each node reading 1/4 at 0.1 GiB/s.
    per_node = 673.15e9 / 4
    expected = LOAD_SAFETY * (per_node / (0.1 * GiB) + LOAD_OVERHEAD_S)
    assert expected <= allowed < expected + startup["periodSeconds"]
    assert allowed > 45 * 60  # the planning document saw 40-50 minutes
    # Liveness looks at the gateway process only; readiness at the replicas.
    assert "/health" in head["livenessProbe"]["exec"]["command"][-1]
    assert "/ready" in head["readinessProbe"]["exec"]["command"][-1]
    worker = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker[probe]["httpGet"]["path"] == "/api/local_raylet_healthz"


def test_faster_volume_shortens_the_startup_budget() -> None:
    data = CASES["r1-8x8-k8s"].data()
    slow = deploy_plan(config_of(data)).load_budget_s()
    data["deploy"]["kubernetes"]["load_gib_per_s"] = 1.0
    assert deploy_plan(config_of(data)).load_budget_s() < slow / 2


def test_model_volume_sized_from_the_checkpoint(built: list[dict[str, Any]]) -> None:
    pvc = next(d for d in built if d["metadata"]["name"] == "deepfleet-models")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "690Gi"  # 673 GB + 10%
    assert pvc["spec"]["storageClassName"] == "nfs-client"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_download_job_and_wait(built: list[dict[str, Any]]) -> None:
    job = by_kind(built, "Job")[0]
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert (
        "hf download deepseek-ai/DeepSeek-R1 --local-dir /models/deepseek-ai/DeepSeek-R1" in script
    )
    cluster = by_kind(built, "RayCluster")[0]
    inits = cluster["spec"]["headGroupSpec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["wait-model", "api-key"]


def test_gateway_service_and_open_webui(built: list[dict[str, Any]]) -> None:
    svc = next(
        d for d in built if d["metadata"]["name"] == "deepfleet-gateway" and d["kind"] == "Service"
    )
    assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert svc["spec"]["ports"][0]["port"] == 8000
    assert svc["spec"]["selector"] == {"ray.io/cluster": "deepfleet", "ray.io/node-type": "head"}
    ui = by_kind(built, "Deployment")[0]
    env = {e["name"]: e for e in ui["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OPENAI_API_BASE_URL"]["value"] == (
        "http://deepfleet-gateway.deepseek.svc.cluster.local:8000/v1"
    )
    config = next(s for s in by_kind(built, "Secret") if s["metadata"]["name"].endswith("-config"))
    # The config as written, plus the Service's names in gateway.allowed_hosts (Open-WebUI
    # sends them as Host).
    rendered = yaml.safe_load(base64.b64decode(config["data"]["fleet.yaml"]))
    original = yaml.safe_load(CASES["r1-8x8-k8s"].text)
    hosts = rendered["gateway"].pop("allowed_hosts")
    assert "deepfleet-gateway.deepseek.svc.cluster.local" in hosts
    assert {k: v for k, v in rendered.items() if v} == {k: v for k, v in original.items() if v}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"gateway": {"host": "127.0.0.1"}},
            "gateway.host: 127.0.0.1 is loopback; set 0.0.0.0 so the Service and the probes "
            "reach the gateway",
        ),
    ],
)
def test_k8s_refuses(change: dict[str, Any], problem: str) -> None:
    data = CASES["r1-8x8-k8s"].data()
    data.update(change)
    with pytest.raises(DeployError) as info:
        render("k8s", data)
    assert info.value.problems == [problem]


def ray_cluster_of(data: dict[str, Any]) -> dict[str, Any]:
    files = render("k8s", data).files
    name = next(n for n in files if n.endswith("raycluster.yaml"))
    doc: dict[str, Any] = yaml.safe_load(files[name])
    return doc


def test_a_replica_range_lets_kuberay_add_and_remove_worker_pods() -> None:
    """`replicas: {min, max}` (issue 24): the RayCluster's autoscaler is on and its GPU group
    may go from the nodes `min` replicas take to those `max` take; a fixed count keeps it off."""
    fixed = ray_cluster_of(CASES["r1-8x8-k8s"].data())
    assert fixed["spec"]["enableInTreeAutoscaling"] is False
    group = fixed["spec"]["workerGroupSpecs"][0]
    assert group["minReplicas"] == group["maxReplicas"] == group["replicas"] == 4  # 1 x tp8 pp4
    data = CASES["r1-8x8-k8s"].data()
    data["models"][0]["replicas"] = {"min": 1, "max": 2}
    cluster = ray_cluster_of(data)
    validate_crd(cluster)
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    assert cluster["spec"]["autoscalerOptions"]["upscalingMode"] == "Default"
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (4, 4, 8)


def test_gateway_pods_behind_the_service(tmp_path: Path) -> None:
    """`gateway.instances: 3` on PostgreSQL: a Deployment of 3 gateway pods that follow the
    fleet state from the database, the Service and the open NetworkPolicy on them, the head's
    config with instances 1 and share_fleet; every object validates."""
    render_case(CASES["r1-8x8-k8s-gateways"]).write(tmp_path)
    docs = kustomize(tmp_path)
    for doc in docs:
        validate(doc)
    gateway = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "deepfleet-gateway"
    )
    pods = {"app.kubernetes.io/component": "gateway", "app.kubernetes.io/instance": "deepfleet"}
    assert gateway["spec"]["replicas"] == 3
    assert gateway["spec"]["template"]["metadata"]["labels"] == pods
    pod = gateway["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["python3", "-m", "deepfleet.gateway.remote"]
    assert container["envFrom"] == [{"secretRef": {"name": "deepfleet-state-db"}}]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert "hostNetwork" not in pod
    svc = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "deepfleet-gateway")
    assert svc["spec"]["selector"] == pods
    open_to_all = next(
        d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "deepfleet-gateway"
    )
    assert open_to_all["spec"]["podSelector"]["matchLabels"] == pods
    config = next(s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("-config"))
    rendered = yaml.safe_load(base64.b64decode(config["data"]["fleet.yaml"]))
    head_cfg = config_of(rendered)  # what `deepfleet up` and the gateway pods load
    assert head_cfg.gateway.instances == 1 and head_cfg.gateway.state.share_fleet
    assert check(head_cfg) is None
    head = by_kind(docs, "RayCluster")[0]["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["envFrom"] == container["envFrom"]
    assert head["initContainers"][-1]["envFrom"] == container["envFrom"]  # creates the key


def test_gateway_pods_need_postgres() -> None:
    data = CASES["r1-8x8-k8s"].data()
    data["gateway"] = {"host": "0.0.0.0", "instances": 2}
    with pytest.raises(DeployError) as info:
        render("k8s", data)
    assert info.value.problems == [
        "gateway.instances: 2 gateway pods share keys, limits and the fleet state through "
        "PostgreSQL; set gateway.state.backend: postgres (with dsn or dsn_env, and "
        "deploy.kubernetes.state_env_secret for the password), or instances: 1"
    ]
