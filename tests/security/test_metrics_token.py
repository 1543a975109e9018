"""Finding 18: the gateway's metrics token sat in plain text in the k8s ConfigMap (the copy
of fleet.yaml), in a kustomize literal and in compose's prometheus.yml.

The token may only be in files the bundle writes 0600 (kustomize turns them into Secrets;
Prometheus reads it with credentials_file), never in a ConfigMap, a literal or a file others
can read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import CASES
from tests.security.bundles import write

TOKEN = "metrics-token-7f3a9c"


@pytest.mark.parametrize("name", ["r1-8x8-k8s", "r1-8x8-compose", "h200-1x8-compose"])
def test_metrics_token_not_readable_from_configmap_or_shared_files(
    name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    data = case.data()
    data.setdefault("gateway", {})["metrics_token"] = TOKEN
    text = case.text.replace("gateway:\n", f"gateway:\n  metrics_token: {TOKEN}\n", 1)
    assert TOKEN in text
    from deepfleet.deploy.plan import deploy_plan
    from tests.deploy.conftest import RENDERERS, config_of

    bundle = RENDERERS[case.target](deploy_plan(config_of(data)), text)
    modes = write(bundle, tmp_path)
    holding = [rel for rel, body in bundle.files.items() if TOKEN in body]
    assert holding, "the token went nowhere"
    for rel in holding:
        assert modes[rel] == 0o600, f"{rel} holds the metrics token with mode {modes[rel]:o}"
    if case.target == "k8s":
        kustomization = yaml.safe_load(bundle.files["kustomization.yaml"])
        assert "configMapGenerator" not in kustomization or not any(
            "fleet.yaml" in str(g) for g in kustomization["configMapGenerator"]
        )
        for generator in kustomization.get("secretGenerator", []):
            assert not any(TOKEN in lit for lit in generator.get("literals", []))
    else:
        prometheus = yaml.safe_load(bundle.files["prometheus/prometheus.yml"])
        job = next(j for j in prometheus["scrape_configs"] if "gateway" in j["job_name"])
        assert "credentials_file" in job["authorization"]
