"""The KubeRay RayCluster: a head pod running Ray's head, the deepfleet controller and the
gateway; one GPU worker group sized from the planner's layout.

Container commands are ours (annotation ray.io/overwrite-container-cmd), built from the same
rayStartParams the operator reads, so the operator and the pods agree. Probes:

- head: startupProbe on the gateway's /ready with a budget sized from the model (weights per
  node / the volume's read rate, plus engine start-up, times two), so a replica still loading
  is never counted as a failure; then readiness on /ready (a ready replica per model) and
  liveness on /health (the gateway process answers; replicas loading or restarting do not
  matter). Exec probes, because the gateway listens on 127.0.0.1 until an API key exists.
- workers: raylet health only. The engines inside them are the controller's to supervise; no
  probe of a worker looks at an engine, so none can kill a replica that is loading.

Ray runs with token authentication (RAY_AUTH_MODE=token, the token from the Secret
<cluster>-ray-auth mounted read-only; the raylet health path stays public, so the worker
probes need no token) and the dashboard on 127.0.0.1: what `deepfleet node start` does. The
fleet.yaml is mounted from the Secret <cluster>-config, since it may hold the metrics token.
Every pod carries INSTANCE_LABEL, which the NetworkPolicy (k8s_policy.py) selects on.
"""

from __future__ import annotations

from typing import Any

from deepfleet.deploy.plan import DeployPlan

CONFIG_DIR = "/etc/deepfleet"
STATE_DIR = "/var/lib/deepfleet"
KEY_FILE = f"{STATE_DIR}/admin-key.json"
METRICS_PORT = 8080
AGENT_PORT = 52365
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
PROBE_PERIOD_S = 30
MODELS_VOLUME = "models"
RAY_AUTH_VOLUME = "ray-auth"
RAY_AUTH_DIR = "/etc/deepfleet-ray-auth"
RAY_AUTH_KEY = "token"
SECRET_MODE = 0o400
INSTANCE_LABEL = "app.kubernetes.io/instance"


def ray_auth_secret(dp: DeployPlan) -> str:
    return f"{dp.cfg.deploy.kubernetes.name}-ray-auth"


def config_secret(dp: DeployPlan) -> str:
    return f"{dp.cfg.deploy.kubernetes.name}-config"


def _ray_auth_env() -> list[dict[str, str]]:
    return [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {"name": "RAY_AUTH_TOKEN_PATH", "value": f"{RAY_AUTH_DIR}/{RAY_AUTH_KEY}"},
    ]


def _ray_auth_volume(dp: DeployPlan) -> dict[str, Any]:
    secret = {"secretName": ray_auth_secret(dp), "defaultMode": SECRET_MODE}
    return {"name": RAY_AUTH_VOLUME, "secret": secret}


_RAY_AUTH_MOUNT = {"name": RAY_AUTH_VOLUME, "mountPath": RAY_AUTH_DIR, "readOnly": True}


def pod_labels(dp: DeployPlan, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/component": component, INSTANCE_LABEL: dp.cfg.deploy.kubernetes.name}


def _pod_metadata(dp: DeployPlan, component: str) -> dict[str, Any]:
    """A Ray pod's labels, and annotations that let deepfleet's command replace KubeRay's and
    let Prometheus scrape Ray's metrics port."""
    return {
        "labels": pod_labels(dp, component),
        "annotations": {
            "ray.io/overwrite-container-cmd": "true",
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(METRICS_PORT),
        },
    }


def head_service(dp: DeployPlan) -> str:
    """KubeRay names the head's Service <cluster>-head-svc."""
    k = dp.cfg.deploy.kubernetes
    return f"{k.name}-head-svc.{k.namespace}.svc.cluster.local"


def _params_flags(params: dict[str, str]) -> str:
    return " ".join(f"--{k}={v}" for k, v in params.items())


def _http_exec(port: int, path: str) -> list[str]:
    code = (
        "import sys, urllib.request; "
        f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=5)"
        ".status == 200 else 1)"
    )
    return ["python3", "-c", code]


def _probe(action: dict[str, Any], period: int, failures: int) -> dict[str, Any]:
    return {
        **action,
        "periodSeconds": period,
        "timeoutSeconds": 10,
        "failureThreshold": failures,
    }


def gateway_probes(dp: DeployPlan) -> dict[str, Any]:
    """The head's probes, also a gateway pod's (k8s_gateway.py): both run a gateway."""
    port = dp.cfg.gateway.port
    ready = {"exec": {"command": _http_exec(port, "/ready")}}
    alive = {"exec": {"command": _http_exec(port, "/health")}}
    budget = dp.load_budget_s()
    return {
        "startupProbe": _probe(ready, PROBE_PERIOD_S, -(-budget // PROBE_PERIOD_S)),
        "readinessProbe": _probe(ready, 10, 3),
        "livenessProbe": _probe(alive, 20, 6),
    }


def _worker_probes() -> dict[str, Any]:
    raylet = {"httpGet": {"path": "/api/local_raylet_healthz", "port": AGENT_PORT}}
    return {
        "startupProbe": _probe(raylet, 10, 60),
        "readinessProbe": _probe(raylet, 10, 3),
        "livenessProbe": _probe(raylet, 30, 12),
    }


def model_volume(dp: DeployPlan) -> dict[str, Any]:
    mv = dp.cfg.deploy.kubernetes.model_volume
    if mv.host_path is not None:
        return {"name": MODELS_VOLUME, "hostPath": {"path": mv.host_path, "type": "Directory"}}
    return {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": mv.claim}}


def models_read_only(dp: DeployPlan) -> bool:
    """Engines write into the volume only when a model is a hub id (their download cache)."""
    return all(m.spec.is_local_path for m in dp.models)


def hf_home(dp: DeployPlan) -> str:
    return f"{dp.cfg.deploy.model_dir}/.hf-cache"


def _network_env(dp: DeployPlan) -> list[dict[str, str]]:
    nic = dp.cfg.cluster.network.interface
    if not (dp.cfg.deploy.kubernetes.host_network and nic):
        return []
    names = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME")
    return [{"name": n, "value": nic} for n in names]


def state_env(dp: DeployPlan) -> list[dict[str, Any]]:
    """envFrom of a container that opens gateway.state's database (the head's, the key init
    container's, a gateway pod's): the Secret deploy.kubernetes.state_env_secret, if set."""
    secret = dp.cfg.deploy.kubernetes.state_env_secret
    return [{"secretRef": {"name": secret}}] if secret else []


def _pod_spec(dp: DeployPlan, containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A pod spec; empty optional fields (no init containers, no selector) are left out."""
    k = dp.cfg.deploy.kubernetes
    for c in containers:
        if not c.get("env", True):
            del c["env"]
    spec: dict[str, Any] = {
        "containers": containers,
        **{key: value for key, value in extra.items() if value},
    }
    if k.host_network:
        spec |= {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}
    return spec


def _head(dp: DeployPlan, wait: list[dict[str, Any]]) -> dict[str, Any]:
    d, k = dp.cfg.deploy, dp.cfg.deploy.kubernetes
    params = {
        "port": str(d.ray_port),
        "dashboard-host": "127.0.0.1",
        "num-gpus": "0",
        "metrics-export-port": str(METRICS_PORT),
        "dashboard-agent-listen-port": str(AGENT_PORT),
    }
    up = f"deepfleet up -f {CONFIG_DIR}/fleet.yaml --state-dir {STATE_DIR}"
    key = (
        f"umask 077; [ -s {KEY_FILE} ] || deepfleet keys create --name admin --admin --json "
        f"-f {CONFIG_DIR}/fleet.yaml --state-dir {STATE_DIR} > {KEY_FILE}"
    )
    resources = {"cpu": str(k.head_cpu), "memory": f"{k.head_memory_gib}Gi"}
    state = state_env(dp)
    container = {
        "name": "ray-head",
        "image": d.images.deepfleet,
        "command": ["/bin/bash", "-lc", "--"],
        "args": [f"ulimit -n 65536; ray start --head {_params_flags(params)} && exec {up}"],
        "ports": [
            {"containerPort": d.ray_port, "name": "gcs"},
            {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
            {"containerPort": CLIENT_PORT, "name": "client"},
            {"containerPort": METRICS_PORT, "name": "metrics"},
            {"containerPort": dp.cfg.gateway.port, "name": "gateway"},
        ],
        "env": [*_ray_auth_env(), *_network_env(dp)],
        **({"envFrom": state} if state else {}),
        "resources": {"requests": resources, "limits": resources},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": MODELS_VOLUME, "mountPath": d.model_dir, "readOnly": True},
            _RAY_AUTH_MOUNT,
        ],
        **gateway_probes(dp),
    }
    key_init = {
        "name": "api-key",
        "image": d.images.deepfleet,
        "command": ["/bin/bash", "-c", key],
        **({"envFrom": state} if state else {}),
        "volumeMounts": container["volumeMounts"][:2],
    }
    volumes = [
        {"name": "config", "secret": {"secretName": config_secret(dp), "defaultMode": SECRET_MODE}},
        {"name": "state", "persistentVolumeClaim": {"claimName": f"{k.name}-state"}},
        model_volume(dp),
        _ray_auth_volume(dp),
    ]
    return {
        "rayStartParams": params,
        "serviceType": "ClusterIP",
        "template": {
            "metadata": _pod_metadata(dp, "head"),
            "spec": _pod_spec(
                dp,
                [container],
                initContainers=[*wait, key_init],
                volumes=volumes,
                nodeSelector=dict(k.head_node_selector),
            ),
        },
    }


def _worker_group(dp: DeployPlan, wait: list[dict[str, Any]]) -> dict[str, Any]:
    d, k = dp.cfg.deploy, dp.cfg.deploy.kubernetes
    per_node = dp.cfg.cluster.devices_per_node
    params = {
        "num-gpus": str(per_node),
        "metrics-export-port": str(METRICS_PORT),
        "dashboard-agent-listen-port": str(AGENT_PORT),
    }
    start = f"ray start --address={head_service(dp)}:{d.ray_port} {_params_flags(params)} --block"
    limits: dict[str, str] = {k.gpu_resource: str(per_node)}
    if k.worker_cpu is not None:
        limits["cpu"] = str(k.worker_cpu)
    if k.worker_memory_gib is not None:
        limits["memory"] = f"{k.worker_memory_gib}Gi"
    env = [{"name": "HF_HOME", "value": hf_home(dp)}, *_ray_auth_env(), *_network_env(dp)]
    container = {
        "name": "ray-worker",
        "image": d.images.deepfleet,
        "command": ["/bin/bash", "-lc", "--"],
        "args": [f"ulimit -n 65536; {start}"],
        "ports": [{"containerPort": METRICS_PORT, "name": "metrics"}],
        "env": env,
        "resources": {"requests": dict(limits), "limits": limits},
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": MODELS_VOLUME, "mountPath": d.model_dir, "readOnly": models_read_only(dp)},
            _RAY_AUTH_MOUNT,
        ],
        **_worker_probes(),
    }
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{d.shm_size_gib}Gi"}},
        model_volume(dp),
        _ray_auth_volume(dp),
    ]
    nodes = dp.nodes_used
    fewest, most = dp.node_bounds()  # models with `replicas: {min, max}` let KubeRay scale
    return {
        "groupName": "gpu",
        "replicas": nodes,
        "minReplicas": fewest,
        "maxReplicas": most,
        "rayStartParams": params,
        "template": {
            "metadata": _pod_metadata(dp, "gpu-worker"),
            "spec": _pod_spec(
                dp,
                [container],
                initContainers=wait,
                volumes=volumes,
                nodeSelector=dict(k.node_selector),
                tolerations=[t.model_dump(exclude_none=True) for t in k.tolerations],
            ),
        },
    }


def _autoscaling(dp: DeployPlan) -> dict[str, Any]:
    """KubeRay's in-tree autoscaler, on when a model's replica count may move: a placement
    group the controller asks for beyond the running nodes then makes Ray add a worker pod
    (up to the group's maxReplicas), and an idle pod goes after 10 minutes."""
    fewest, most = dp.node_bounds()
    if fewest == most:
        return {"enableInTreeAutoscaling": False}
    options = {"upscalingMode": "Default", "idleTimeoutSeconds": 600}
    return {"enableInTreeAutoscaling": True, "autoscalerOptions": options}


def ray_cluster(dp: DeployPlan, wait: list[dict[str, Any]]) -> dict[str, Any]:
    """The RayCluster; `wait` are init containers that hold pods until the weights are there."""
    k = dp.cfg.deploy.kubernetes
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": k.name, "labels": {"app.kubernetes.io/name": "deepfleet"}},
        "spec": {
            "rayVersion": k.ray_version,
            **_autoscaling(dp),
            "headGroupSpec": _head(dp, wait),
            "workerGroupSpecs": [_worker_group(dp, wait)],
        },
    }
