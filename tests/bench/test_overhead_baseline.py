"""benchmarks/overhead/run.py --baseline-src: the older gateway must read the fleet.json the
harness writes for it. 8d21368 (the commit before migration) refuses this tree's newer state
keys, so the harness writes each target's file with that target's own deepfleet."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location(
        "overhead_run", ROOT / "benchmarks/overhead/run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


BASELINE = "8d21368"
READ = (
    "import sys; from pathlib import Path; from deepfleet.fleet.state import read_state; "
    "s = read_state(Path(sys.argv[1])); print(s.replicas[0].url if s else 'NONE')"
)


@pytest.fixture(scope="module")
def baseline_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        tar = subprocess.run(
            ["git", "archive", BASELINE, "src/deepfleet"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"no git history with {BASELINE} (a shallow clone)")
    out = tmp_path_factory.mktemp("baseline")
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(out, filter="data")
    return out / "src"


def _read_with(src: Path, path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(src)}
    run = subprocess.run(
        [sys.executable, "-c", READ, str(path)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_the_baseline_reads_the_file_written_for_it(baseline_src: Path, tmp_path: Path) -> None:
    path = _harness().write_fleet(
        tmp_path / "base", "http://127.0.0.1:9", {"PYTHONPATH": str(baseline_src)}
    )
    assert _read_with(baseline_src, path) == "http://127.0.0.1:9"


def test_the_baseline_refuses_this_trees_file(baseline_src: Path, tmp_path: Path) -> None:
    """Why the harness cannot write one file for every target."""
    path = _harness().write_fleet(
        tmp_path / "new", "http://127.0.0.1:9", {"PYTHONPATH": str(ROOT / "src")}
    )
    assert _read_with(ROOT / "src", path) == "http://127.0.0.1:9"
    assert _read_with(baseline_src, path) == "NONE"
