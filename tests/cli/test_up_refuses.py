"""`deepfleet up -f` refuses a config that cannot fit, before it starts anything."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

CONFIG = """
cluster: {nodes: 1, devices_per_node: 8, device: A100-40GB}
models:
  - name: deepseek-r1
    source: deepseek-ai/DeepSeek-R1
    engine: vllm
    max_model_len: 16384
"""


def test_up_prints_reason_and_alternatives_and_exits_1(tmp_path: Path) -> None:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(CONFIG)
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "deepfleet", "up", "-f", str(spec), "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = " ".join(r.stderr.split())
    assert r.returncode == 1, r.stderr
    assert "models[0] deepseek-r1: does not fit on 1 node(s) x 8 A100-40GB" in said
    assert "weights need" in said and "nearest configurations that fit" in said
    assert "nodes of 8 x A100-40GB" in said
    assert time.monotonic() - started < 60
    assert not (tmp_path / "logs").exists()  # nothing was started
