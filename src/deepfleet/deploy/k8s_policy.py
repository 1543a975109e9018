"""The NetworkPolicies of the Kubernetes bundle: who may open a connection to the release's
pods.

Every pod of the release (Ray head and workers, Open-WebUI, the download Job) carries
INSTANCE_LABEL. Policies add up, so:
- `<cluster>-internal` selects every pod of the release and admits only the release's own pods
  (Ray's GCS, raylets, object managers, workers and the engines talk among themselves);
- `<cluster>-gateway` admits anyone to the gateway's port on the pods that serve it: the head,
  or the gateway Deployment's pods with `gateway.instances > 1` (its API keys guard it; the
  head's own gateway is then reached only from inside the release);
- `<cluster>-open-webui` (when Open-WebUI is on) admits anyone to Open-WebUI's port (its
  own accounts guard it; signup is off and the admin is created from a Secret).
Everything else (Ray's ports, the dashboard, the engines, the Ray metrics port) is closed to
pods and hosts outside the release. The policies need a CNI that enforces NetworkPolicy, and
do not apply to pods with hostNetwork (deploy.kubernetes.host_network); there Ray's token
authentication is what is left (docs/security.md).
"""

from __future__ import annotations

from typing import Any

from deepfleet.deploy import k8s_gateway
from deepfleet.deploy.k8s_ray import INSTANCE_LABEL
from deepfleet.deploy.plan import DeployPlan
from deepfleet.deploy.webui import WEBUI_PORT

LABELS = {"app.kubernetes.io/name": "deepfleet"}


def _policy(name: str, pods: dict[str, str], ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "spec": {
            "podSelector": {"matchLabels": pods},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _from_anyone(port: int) -> list[dict[str, Any]]:
    return [{"ports": [{"protocol": "TCP", "port": port}]}]


def network_policies(dp: DeployPlan) -> list[dict[str, Any]]:
    k = dp.cfg.deploy.kubernetes
    release = {INSTANCE_LABEL: k.name}
    policies = [
        _policy(
            f"{k.name}-internal", release, [{"from": [{"podSelector": {"matchLabels": release}}]}]
        ),
        _policy(
            f"{k.name}-gateway",
            k8s_gateway.policy_pods(dp),
            _from_anyone(dp.cfg.gateway.port),
        ),
    ]
    if dp.cfg.deploy.open_webui.enabled:
        policies.append(
            _policy(
                f"{k.name}-open-webui",
                {**release, "app.kubernetes.io/component": "open-webui"},
                _from_anyone(WEBUI_PORT),
            )
        )
    return policies
