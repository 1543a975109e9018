"""Offline validation of rendered Kubernetes manifests: built-in kinds with kubernetes-validate
(strict), KubeRay and prometheus-operator kinds with the transcribed schemas beside this file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

K8S_VERSION = "1.32"
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("ray.io/v1", "RayCluster"): "raycluster-ray.io-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}


def _k8s_definitions() -> dict[str, Any]:
    from kubernetes_validate import utils

    return utils.schema_contents(  # type: ignore[no-any-return]
        f"kubernetes-json-schema/v{K8S_VERSION}.0-local-strict/_definitions.json", K8S_VERSION
    )


def validate_crd(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `doc` fits its transcribed CRD schema."""
    import jsonschema
    from referencing import Registry, Resource

    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])]).read_text())
    registry = Registry().with_resources(
        [
            (
                "https://kubernetes.io/api/_definitions.json",
                Resource.from_contents(_k8s_definitions()),
            ),
        ]
    )
    jsonschema.Draft202012Validator(schema, registry=registry).validate(doc)


def validate(doc: dict[str, Any]) -> None:
    """Validate one manifest offline; raises on the first error."""
    if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
        validate_crd(doc)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from kubernetes_validate import utils

    utils.validate(doc, K8S_VERSION, strict=True)
