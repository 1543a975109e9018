"""Golden files: the complete bundles of the reference plan (R1 on 8 x 8 A100-40GB; Kubernetes
and compose), one GPU host, and the 2 x 8 x 910B Ascend plan (MindIE and vllm-ascend).

After an intended change: DEEPFLEET_UPDATE_GOLDEN=1 pytest tests/deploy/test_golden.py, then
read the diff before committing it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.deploy.conftest import CASES, render_case

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DEEPFLEET_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundle_matches_golden(name: str) -> None:
    bundle = render_case(CASES[name])
    folder = GOLDEN / name
    if UPDATE:
        shutil.rmtree(folder, ignore_errors=True)
        bundle.write(folder)
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == set(bundle.files), f"files differ from {folder}"
    for rel, text in bundle.files.items():
        assert (folder / rel).read_text() == text, f"{name}/{rel} differs from the golden file"
