"""What the security tests read out of rendered bundles: files as written (with their modes),
the ports a bundle publishes, and whether a bundle's NetworkPolicies admit a connection.

Only names that the bundles themselves define are used (file names, YAML fields), so each
test also runs against an older renderer and shows what it let through."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deepfleet.deploy.bundle import Bundle

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def write(bundle: Bundle, folder: Path) -> dict[str, int]:
    """Write `bundle` into `folder`; returns each file's permission bits."""
    bundle.write(folder)
    return {rel: (folder / rel).stat().st_mode & 0o777 for rel in bundle.files}


def docs(bundle: Bundle, rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(bundle.files[rel]) if d]


def all_docs(bundle: Bundle) -> list[dict[str, Any]]:
    """Every Kubernetes object of a k8s bundle (its YAML files but the kustomization)."""
    out: list[dict[str, Any]] = []
    for rel in sorted(bundle.files):
        if rel.endswith(".yaml") and rel != "kustomization.yaml" and rel != "fleet.yaml":
            out += [d for d in docs(bundle, rel) if "kind" in d]
    return out


@dataclass(frozen=True)
class Published:
    where: str
    address: str
    port: int


def _compose_port(service: str, entry: Any) -> Published:
    if isinstance(entry, dict):
        return Published(service, str(entry.get("host_ip", "0.0.0.0")), int(entry["published"]))
    parts = str(entry).rsplit(":", 2)
    if len(parts) == 3:
        return Published(service, parts[0].strip("[]") or "0.0.0.0", int(parts[1]))
    return Published(service, "0.0.0.0", int(parts[0]))


def _script_ports(rel: str, text: str) -> list[Published]:
    """`-p` / `--publish` of every `docker run` / `docker create` in a script."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] in (["docker", "run"], ["docker", "create"]):
            out += _publish_flags(rel, words)
    return out


def _publish_flags(rel: str, words: list[str]) -> list[Published]:
    out = []
    for i, w in enumerate(words):
        value = None
        if w in ("-p", "--publish") and i + 1 < len(words):
            value = words[i + 1]
        elif w.startswith("--publish="):
            value = w.split("=", 1)[1]
        if value is not None:
            out.append(_compose_port(rel, value.split("/")[0]))
    return out


def published_ports(bundle: Bundle) -> list[Published]:
    """Every port the bundle makes reachable from outside its hosts' loopback: compose
    `ports`, `docker run -p` in scripts, Services of type NodePort or LoadBalancer and
    container hostPorts."""
    out: list[Published] = []
    if "compose.yaml" in bundle.files:
        for name, service in (yaml.safe_load(bundle.files["compose.yaml"])["services"]).items():
            out += [_compose_port(name, p) for p in service.get("ports", [])]
    for rel in bundle.scripts:
        out += _script_ports(rel, bundle.files[rel])
    if "kustomization.yaml" in bundle.files:
        for d in all_docs(bundle):
            name = d["metadata"]["name"]
            if d["kind"] == "Service" and d["spec"].get("type") in ("NodePort", "LoadBalancer"):
                out += [Published(name, "0.0.0.0", int(p["port"])) for p in d["spec"]["ports"]]
            for c in _containers(d):
                for p in c.get("ports", []):
                    if "hostPort" in p:
                        out.append(Published(name, p.get("hostIP", "0.0.0.0"), p["hostPort"]))
    return out


def _containers(obj: Any) -> list[dict[str, Any]]:
    """Every container (and init container) anywhere inside a Kubernetes object."""
    found: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += value
            else:
                found += _containers(value)
    elif isinstance(obj, list):
        for value in obj:
            found += _containers(value)
    return found


def containers(obj: Any) -> list[dict[str, Any]]:
    return _containers(obj)


def pod_templates(obj: Any) -> list[dict[str, Any]]:
    """Every pod template (a dict with metadata and a spec holding containers)."""
    found: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        if "spec" in obj and isinstance(obj["spec"], dict) and "containers" in obj["spec"]:
            found.append(obj)
        for value in obj.values():
            found += pod_templates(value)
    elif isinstance(obj, list):
        for value in obj:
            found += pod_templates(value)
    return found


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def admitted(
    policies: list[dict[str, Any]],
    target: dict[str, str],
    port: int,
    source: dict[str, str] | None,
) -> bool:
    """Whether a TCP connection to `port` of a pod labelled `target` is admitted, coming from a
    pod of the same namespace labelled `source` (None: from outside the cluster, or from a
    pod of another namespace). No policy selecting the pod: everything is admitted."""
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], target)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(int(p["port"]) == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            if source is not None and any(
                set(peer) == {"podSelector"} and _matches(peer["podSelector"], source)
                for peer in peers
            ):
                return True
    return False


def ray_start_lines(bundle: Bundle) -> dict[str, str]:
    """Script -> its text, for every script of the bundle that runs `ray start`."""
    return {rel: bundle.files[rel] for rel in bundle.scripts if "ray start" in bundle.files[rel]}


def env_assignments(text: str) -> dict[str, str]:
    """`-e KEY=value` pairs of the docker commands in a script (quotes removed)."""
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    return dict(
        words[i + 1].split("=", 1)
        for i, w in enumerate(words[:-1])
        if w == "-e" and "=" in words[i + 1]
    )


def mounts(text: str) -> list[str]:
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-v"]


HEX = re.compile(r"^[0-9a-f]{32,}$")
