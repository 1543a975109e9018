"""Several gateway pods behind the gateway Service (`gateway.instances: N` on Kubernetes).

With one instance the gateway runs in the Ray head pod beside the controller, as always. With
N > 1 the bundle adds a Deployment of N gateway pods and the Service selects them instead of
the head:

- each pod runs `python -m deepfleet.gateway.remote` (gateway/remote.py): it follows the fleet
  state that the head's controller copies into the PostgreSQL state database
  (`gateway.state.share_fleet`, which the head's config gets here), so a gateway pod needs no
  volume shared with the head, opens no port to it, and keeps routing with the last state
  while the head restarts; keys, limits and usage are that database's, exact across pods;
- so N > 1 needs `gateway.state.backend: postgres` (refused otherwise, naming the field), and
  the pods reach the database with the environment of the Secret
  `deploy.kubernetes.state_env_secret` (the head gets it too);
- the head's config says `instances: 1` (on Kubernetes the instances are pods, not local
  processes behind HAProxy) and keeps its own gateway, which its probes ask;
- probes as the head's: startup and readiness on /ready (a ready replica per model), liveness
  on /health; the pods spread over nodes where they can (a node's loss leaves the others),
  and one is replaced at a time, the new one ready first;
- the model volume is mounted read-only: KV-aware routing tokenizes with the model's
  tokenizer files, at the path the fleet state names.
"""

from __future__ import annotations

from typing import Any

import yaml

from deepfleet.deploy import k8s_ray
from deepfleet.deploy.plan import DeployPlan

STATE_DIR = "/var/lib/deepfleet-gateway"
COMPONENT = "gateway"


def gateway_pods(dp: DeployPlan) -> bool:
    """Whether the gateways run in pods of their own (gateway.instances > 1)."""
    return dp.cfg.gateway.instances > 1


def problems(dp: DeployPlan) -> list[str]:
    g = dp.cfg.gateway
    if gateway_pods(dp) and g.state.backend != "postgres":
        return [
            f"gateway.instances: {g.instances} gateway pods share keys, limits and the fleet "
            "state through PostgreSQL; set gateway.state.backend: postgres (with dsn or "
            "dsn_env, and deploy.kubernetes.state_env_secret for the password), or "
            "instances: 1"
        ]
    return []


def head_config(dp: DeployPlan, config_text: str) -> str:
    """The config the head and the gateway pods read: with gateway pods, `instances: 1` and
    `state.share_fleet: true`; else unchanged."""
    if not gateway_pods(dp):
        return config_text
    data = yaml.safe_load(config_text) or {}
    gateway = data.setdefault("gateway", {})
    gateway["instances"] = 1
    gateway.setdefault("state", {})["share_fleet"] = True
    head = "".join(line + "\n" for line in config_text.splitlines() if line.startswith("#"))
    head += (
        f"# gateway.instances ({dp.cfg.gateway.instances}) are the gateway Deployment's pods;\n"
        "# the controller shares the fleet state with them through gateway.state.\n"
    )
    return head + str(yaml.safe_dump(data, sort_keys=False))


def selector(dp: DeployPlan) -> dict[str, str]:
    """The pods the gateway Service (and its NetworkPolicy) select."""
    if gateway_pods(dp):
        return k8s_ray.pod_labels(dp, COMPONENT)
    return {"ray.io/cluster": dp.cfg.deploy.kubernetes.name, "ray.io/node-type": "head"}


def policy_pods(dp: DeployPlan) -> dict[str, str]:
    """The pods that serve the gateway's port to anyone."""
    component = COMPONENT if gateway_pods(dp) else "head"
    return {
        k8s_ray.INSTANCE_LABEL: dp.cfg.deploy.kubernetes.name,
        "app.kubernetes.io/component": component,
    }


def _container(dp: DeployPlan) -> dict[str, Any]:
    d, k, g = dp.cfg.deploy, dp.cfg.deploy.kubernetes, dp.cfg.gateway
    command = [
        "python3", "-m", "deepfleet.gateway.remote",
        "-f", f"{k8s_ray.CONFIG_DIR}/fleet.yaml", "--state-dir", STATE_DIR,
        "--wait-s", str(dp.load_budget_s()),
    ]  # fmt: skip
    resources = {"cpu": str(k.gateway_cpu), "memory": f"{k.gateway_memory_gib}Gi"}
    container: dict[str, Any] = {
        "name": COMPONENT,
        "image": d.images.deepfleet,
        "command": command,
        "ports": [{"containerPort": g.port, "name": "gateway"}],
        "resources": {"requests": resources, "limits": resources},
        "volumeMounts": [
            {"name": "config", "mountPath": k8s_ray.CONFIG_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": k8s_ray.MODELS_VOLUME, "mountPath": d.model_dir, "readOnly": True},
        ],
        **k8s_ray.gateway_probes(dp),
    }
    if k.state_env_secret:
        container["envFrom"] = k8s_ray.state_env(dp)
    return container


def deployment(dp: DeployPlan) -> dict[str, Any]:
    k = dp.cfg.deploy.kubernetes
    labels = k8s_ray.pod_labels(dp, COMPONENT)
    config_volume = {"secretName": k8s_ray.config_secret(dp), "defaultMode": k8s_ray.SECRET_MODE}
    spread = {
        "weight": 100,
        "podAffinityTerm": {
            "labelSelector": {"matchLabels": labels},
            "topologyKey": "kubernetes.io/hostname",
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{k.name}-gateway",
            "labels": {"app.kubernetes.io/name": "deepfleet", **labels},
        },
        "spec": {
            "replicas": dp.cfg.gateway.instances,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [_container(dp)],
                    # uvicorn drains for drain_grace_s after SIGTERM; the kubelet waits longer.
                    "terminationGracePeriodSeconds": int(dp.cfg.gateway.drain_grace_s) + 15,
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [spread]
                        }
                    },
                    "volumes": [
                        {"name": "config", "secret": config_volume},
                        {"name": "state", "emptyDir": {}},
                        k8s_ray.model_volume(dp),
                    ],
                },
            },
        },
    }
