"""`deepfleet models pull` against a real hub-protocol server on loopback (tests/weights/hub.py):
the real huggingface_hub client, kill -9 at half and resume, a flipped byte caught and refetched.
The served byte counts come from the server's access log."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepfleet.catalog import bundled
from deepfleet.weights import cache
from tests.weights.hub import Hub, olah_cli, serve

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = "model.safetensors"
LFS_URI = "/_lfs/"  # nginx's URI for LFS blobs, as the hub's CDN


def _model() -> Path:
    folder = bundled.default_target()
    if not bundled.is_intact(folder):
        pytest.skip("the bundled model is not prepared: `deepfleet models prepare bundled`")
    return folder


needs_hub = pytest.mark.skipif(
    olah_cli() is None or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()),
    reason="olah venv or nginx missing: run scripts/setup-olah.sh",
)
pytestmark = [needs_hub, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Capped at 100 MB/s per LFS download so a kill lands near half on 2 cores."""
    with serve(_model(), tmp_path_factory.mktemp("hub"), rate="100m") as h:
        yield h


def _env(hub: Hub, cache_root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "DEEPFLEET_CACHE_DIR": str(cache_root),
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",  # these tests pull from the local hub, whatever the caller set
    }


def _cli(hub: Hub, cache_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepfleet", "models", *args],
        env=_env(hub, cache_root),
        capture_output=True,
        text=True,
        timeout=240,
    )


def _served(hub: Hub, before: int) -> int:
    """LFS bytes served since `before`, once nginx has logged the finished requests."""
    last = -1
    for _ in range(50):
        now = hub.served(LFS_URI) - before
        if now == last:
            return now
        last = now
        time.sleep(0.1)
    return last


def _pull_json(hub: Hub, cache_root: Path) -> dict[str, object]:
    r = _cli(hub, cache_root, "pull", f"hf://{hub.repo}", "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, object] = json.loads(r.stdout)
    return data


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:  # renamed into place meanwhile
        return 0


def _kill_at_half(hub: Hub, cache_root: Path) -> Path:
    """Start a pull, kill -9 it once the weights file is half on disk; return the partial."""
    size = (_model() / WEIGHTS).stat().st_size
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepfleet", "models", "pull", f"hf://{hub.repo}"],
        env=_env(hub, cache_root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    partial: Path | None = None
    while time.monotonic() < deadline and proc.poll() is None:
        # the client names partials <hash>.<etag>.incomplete; only the weights reach half
        big = [p for p in cache_root.rglob("*.incomplete") if _size(p) >= size // 2]
        if big:
            partial = big[0]
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(10)
    assert partial is not None, "the pull ended before reaching half"
    return partial


def test_pull_serves_the_model_and_marks_it_verified(hub: Hub, tmp_path: Path) -> None:
    size = (_model() / WEIGHTS).stat().st_size
    before = hub.served(LFS_URI)
    started = time.monotonic()
    r = _cli(hub, tmp_path, "pull", f"hf://{hub.repo}")
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip())
    assert cache.is_complete(folder)
    assert (folder / WEIGHTS).stat().st_size == size
    assert "MB" in r.stderr and "/s" in r.stderr  # the bar: bytes and rate
    assert re.search(r"\d+:\d\d:\d\d", r.stderr)  # and time left (rich's TimeRemainingColumn)
    served = _served(hub, before)
    tokenizer = (_model() / "tokenizer.json").stat().st_size
    assert served == size + tokenizer  # the two LFS files, once each
    print(f"pull of {size + tokenizer} LFS bytes took {took:.1f}s (100 MB/s cap)")
    again = _pull_json(hub, tmp_path)
    assert again["already_complete"] is True
    assert _served(hub, before) == served  # nothing fetched twice


def test_kill_at_half_then_resume_serves_only_the_rest(hub: Hub, tmp_path: Path) -> None:
    size = (_model() / WEIGHTS).stat().st_size
    before = hub.served(LFS_URI)
    partial = _kill_at_half(hub, tmp_path)
    kept = partial.stat().st_size
    first = _served(hub, before)
    listed = _cli(hub, tmp_path, "list")
    assert "partial" in listed.stdout
    resumed = _pull_json(hub, tmp_path)
    second = _served(hub, before) - first
    print(f"size {size}: first pull served {first}, kept {kept}, resumed pull served {second}")
    assert size // 2 <= kept < size
    assert second == size - kept + (_model() / "tokenizer.json").stat().st_size
    assert resumed["refetched"] == []
    assert cache.is_complete(Path(str(resumed["path"])))


def test_flipped_byte_is_caught_and_refetched(hub: Hub, tmp_path: Path) -> None:
    size = (_model() / WEIGHTS).stat().st_size
    before = hub.served(LFS_URI)
    partial = _kill_at_half(hub, tmp_path)
    with partial.open("r+b") as f:  # damage the part already on disk
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    kept = partial.stat().st_size
    first = _served(hub, before)
    res = _pull_json(hub, tmp_path)
    second = _served(hub, before) - first
    tokenizer = (_model() / "tokenizer.json").stat().st_size
    print(f"flipped byte: resumed {size - kept}, then refetched {size}: served {second}")
    assert res["refetched"] == [WEIGHTS]
    assert second == (size - kept) + size + tokenizer
    folder = Path(str(res["path"]))
    assert (folder / WEIGHTS).read_bytes() == (_model() / WEIGHTS).read_bytes()


def test_verify_finds_a_flipped_byte_and_pull_repairs_it(hub: Hub, tmp_path: Path) -> None:
    res = _pull_json(hub, tmp_path)
    weights = Path(str(res["path"])) / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    r = _cli(hub, tmp_path, "verify", f"hf://{hub.repo}")
    assert r.returncode == 1 and "sha256" in r.stderr, r.stderr
    assert not cache.is_complete(weights.parent)
    repaired = _pull_json(hub, tmp_path)
    assert repaired["already_complete"] is False
    assert _cli(hub, tmp_path, "verify", f"hf://{hub.repo}").returncode == 0
