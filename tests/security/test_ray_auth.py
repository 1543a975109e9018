"""Finding 1 (High): Ray without authentication in the bundles. From any pod or host that
reaches Ray's ports, `ray job submit` runs code on the head, which holds the admin key.

Every bundle that runs Ray must start it as `deepfleet node start` does: token
authentication (RAY_AUTH_MODE=token, the token generated at render time in a 0600 file /
a Secret) and the dashboard on 127.0.0.1; on Kubernetes, NetworkPolicies admit only the
gateway's port from outside the release."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepfleet.deploy.bundle import Bundle
from tests.deploy.conftest import CASES, render_case
from tests.security.bundles import (
    HEX,
    admitted,
    all_docs,
    containers,
    env_assignments,
    mounts,
    pod_templates,
    ray_start_lines,
    write,
)

RAY_PORTS = {"gcs": 6379, "dashboard": 8265, "client": 10001, "agent": 52365, "metrics": 8080}
RAY_BUNDLES = ["r1-8x8-k8s", "r1-8x8-compose", "ascend-2x8-vllm-ascend"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _check_k8s(name: str, bundle: Bundle, modes: dict[str, int]) -> None:
    objects = all_docs(bundle)
    cluster = next(d for d in objects if d["kind"] == "RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"].get("dashboard-host") == "127.0.0.1"
    ray_pods = [head["template"], *(g["template"] for g in cluster["spec"]["workerGroupSpecs"])]
    for template in ray_pods:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for c in template["spec"]["containers"]:
            args = " ".join([*c.get("command", []), *c.get("args", [])])
            assert "--dashboard-host=0.0.0.0" not in args
            env = _env(c)
            assert env.get("RAY_AUTH_MODE") == "token", c["name"]
            token_path = env["RAY_AUTH_TOKEN_PATH"]
            mount = next(m for m in c["volumeMounts"] if token_path.startswith(m["mountPath"]))
            assert mount.get("readOnly") is True
            source = volumes[mount["name"]]
            assert "secret" in source, "Ray's token must come from a Secret, not a ConfigMap"
            assert source["secret"].get("defaultMode", 0o644) & 0o077 == 0
    # the token file kustomize turns into that Secret: generated, 0600
    kustomization = bundle.files["kustomization.yaml"]
    generated = [rel for rel in bundle.files if "ray" in rel and rel.startswith("secrets/")]
    assert generated, "no generated Ray token in the bundle"
    for rel in generated:
        assert rel in kustomization
        assert modes[rel] == 0o600
        assert HEX.match(bundle.files[rel].strip())
    # NetworkPolicies: Ray's ports closed to pods outside the release, the gateway open.
    policies = [d for d in objects if d["kind"] == "NetworkPolicy"]
    labels = [t["metadata"]["labels"] for t in ray_pods]
    head_labels, worker_labels = labels[0], labels[1]
    stranger = {"app": "somebody-else"}
    for port_name, port in RAY_PORTS.items():
        for target in (head_labels, worker_labels):
            assert not admitted(policies, target, port, stranger), f"{port_name} from a pod"
            assert not admitted(policies, target, port, None), f"{port_name} from outside"
        assert admitted(policies, head_labels, port, worker_labels), f"{port_name} inside"
    gateway = CASES[name].data()["gateway"]["port"]
    assert admitted(policies, head_labels, gateway, None)
    assert admitted(policies, head_labels, gateway, stranger)
    # every pod of the release is covered (the download Job and Open-WebUI too)
    for template in pod_templates(objects):
        assert any(
            all(template["metadata"]["labels"].get(k) == v
                for k, v in p["spec"]["podSelector"]["matchLabels"].items())
            for p in policies
        ), template["metadata"]  # fmt: skip
    assert not any(c.get("hostPort") for c in containers(objects))


def _check_scripts(bundle: Bundle, modes: dict[str, int]) -> None:
    scripts = ray_start_lines(bundle)
    assert scripts
    for rel, text in scripts.items():
        env = env_assignments(text)
        assert env.get("RAY_AUTH_MODE") == "token", rel
        token_in_container = env["RAY_AUTH_TOKEN_PATH"]
        mount = next(m for m in mounts(text) if m.split(":")[1] == token_in_container)
        host_side, _, options = mount.split(":", 2)
        assert options == "ro"
        rel_token = host_side.split("}/", 1)[1]  # "${BUNDLE_DIR}/secrets/..."
        assert modes[rel_token] == 0o600
        assert HEX.match(bundle.files[rel_token].strip())
        if "--head" in text:
            assert "--dashboard-host=127.0.0.1" in text, rel
        assert "--dashboard-host=0.0.0.0" not in text


@pytest.mark.parametrize("name", RAY_BUNDLES)
def test_ray_job_submit_from_another_pod_or_host_is_refused(name: str, tmp_path: Path) -> None:
    bundle = render_case(CASES[name])
    modes = write(bundle, tmp_path)
    if CASES[name].target == "k8s":
        _check_k8s(name, bundle, modes)
    else:
        _check_scripts(bundle, modes)
