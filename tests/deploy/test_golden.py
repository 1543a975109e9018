"""Golden files: the complete bundles of the reference plan (R1 on 8 x 8 A100-40GB; Kubernetes
and compose), one GPU host, and the 2 x 8 x 910B Ascend plan (MindIE and vllm-ascend).

After an intended change: DEEPFLEET_UPDATE_GOLDEN=1 pytest tests/deploy/test_golden.py, then
read the diff before committing it.

Secrets generated at render time (files under secrets/, the values in compose's .env) are
random per render: the golden files hold a placeholder in their place, and the test checks
that every one was generated and is private (mode 0600).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from deepfleet.deploy.bundle import SECRETS_DIR, Bundle
from tests.deploy.conftest import CASES, render_case

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DEEPFLEET_UPDATE_GOLDEN") == "1"
PLACEHOLDER = "<generated>"


def _masked(bundle: Bundle) -> Bundle:
    """`bundle` with every generated secret replaced by PLACEHOLDER."""
    out = Bundle(dict(bundle.files), set(bundle.scripts), set(bundle.private))
    for rel, text in bundle.files.items():
        if rel.startswith(f"{SECRETS_DIR}/"):
            assert rel in bundle.private and text.strip(), rel
            out.files[rel] = PLACEHOLDER + "\n"
        elif rel == ".env":
            assert rel in bundle.private, rel
            lines = [line.partition("=") for line in text.splitlines()]
            out.files[rel] = "".join(
                f"{k}={PLACEHOLDER if v and k.endswith('PASSWORD') else v}\n" for k, _, v in lines
            )
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundle_matches_golden(name: str) -> None:
    bundle = _masked(render_case(CASES[name]))
    folder = GOLDEN / name
    if UPDATE:
        shutil.rmtree(folder, ignore_errors=True)
        bundle.write(folder)
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == set(bundle.files), f"files differ from {folder}"
    for rel, text in bundle.files.items():
        assert (folder / rel).read_text() == text, f"{name}/{rel} differs from the golden file"
