import shutil
import subprocess
from pathlib import Path

import pytest

from deepfleet.weights.verify import file_digest


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_sha1_matches_git_hash_object(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_bytes(b'{"a": 1}\n')
    want = subprocess.run(
        ["git", "hash-object", str(p)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert file_digest(p, "git-sha1") == want
