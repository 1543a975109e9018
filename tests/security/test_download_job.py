"""Finding 5 (Medium): shell injection in the Kubernetes download Job. A model `source` or
`deploy.model_dir` went into `bash -c` unquoted, so `/models/x$(touch /tmp/pwned)` ran
`touch` in the Job's pod.

The test renders such a value and runs the Job's script with bash in a temporary folder,
with a stand-in `hf` that only records its arguments: nothing may be executed, and `hf`
must receive the path as written."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import CASES, render, run


def test_model_path_with_command_substitution_does_not_run_in_download_job(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    pwned = tmp_path / "pwned"
    source = f"{models}/deepseek-ai/DeepSeek-R1$(touch {pwned})`touch {pwned}`;touch {pwned}"
    data = CASES["r1-8x8-k8s"].data()
    data["deploy"]["model_dir"] = str(models)
    data["models"][0]["source"] = source
    job = yaml.safe_load(render("k8s", data).files["download-job.yaml"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["/bin/bash", "-c"]
    script = container["command"][2]

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "hf-calls"
    hf = bin_dir / "hf"
    hf.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" >> {calls}\n')
    hf.chmod(hf.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["/bin/bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert not pwned.exists(), "the model path ran a command"
    assert done.returncode == 0, done.stderr
    args = calls.read_text().splitlines()
    assert args[0] == "download" and source in args, args
    assert (models / ".deepfleet").is_dir()
    assert run(["bash", "-n", "-c", script]).returncode == 0
