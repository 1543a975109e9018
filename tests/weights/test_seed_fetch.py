"""A node fetching from a seed over HTTP (weights/seed.py + weights/fetch.py), on loopback:
only the files asked for, checksums of the hub verified on the fetching side, resume from a
partial file, a flipped byte refetched, the token required, nothing outside the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deepfleet.weights import cache
from deepfleet.weights.fetch import fetch_from_seed
from deepfleet.weights.hubs import partial_path
from deepfleet.weights.pull import NotEnoughSpace, PullError
from deepfleet.weights.seed import SeedServer

TOKEN = "t0ken"
FILES = {"a.safetensors": b"A" * 300_000, "b.safetensors": bytes(range(256)) * 1000,
         "config.json": b'{"num_hidden_layers": 2}'}  # fmt: skip


def _seed_folder(root: Path) -> Path:
    folder = root / "seed"
    folder.mkdir()
    entries: dict[str, dict[str, object]] = {}
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
        entries[name] = {"size": len(data), "algo": "sha256",
                         "digest": hashlib.sha256(data).hexdigest()}  # fmt: skip
    cache.mark_complete(folder, entries)
    return folder


@pytest.fixture
def seed(tmp_path: Path) -> Iterator[SeedServer]:
    server = SeedServer(_seed_folder(tmp_path), TOKEN, "127.0.0.1").start()
    try:
        yield server
    finally:
        server.stop()


def test_fetches_only_what_it_needs_and_marks_that(seed: SeedServer, tmp_path: Path) -> None:
    dest = tmp_path / "node2"
    res = fetch_from_seed(seed.url, TOKEN, "n2", dest, ["a.safetensors", "config.json"])
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == [
        cache.MARKER, "a.safetensors", "config.json"]  # fmt: skip
    assert res.fetched_bytes == len(FILES["a.safetensors"]) + len(FILES["config.json"])
    assert set(cache.read_marker(dest)["files"]) == {"a.safetensors", "config.json"}  # type: ignore[arg-type]
    assert seed.stats.snapshot()["sent"] == {"n2": res.fetched_bytes}
    assert seed.stats.snapshot()["progress"]["n2"]["state"] == "complete"
    again = fetch_from_seed(seed.url, TOKEN, "n2", dest, ["a.safetensors"])
    assert again.already_complete and again.fetched_bytes == 0
    more = fetch_from_seed(seed.url, TOKEN, "n2", dest, ["a.safetensors", "b.safetensors"])
    assert more.fetched_bytes == len(FILES["b.safetensors"])  # a is verified, not refetched
    assert set(cache.read_marker(dest)["files"]) == set(FILES)  # type: ignore[arg-type]


def test_resumes_a_partial_file(seed: SeedServer, tmp_path: Path) -> None:
    dest = tmp_path / "node2"
    part = partial_path(dest, "b.safetensors")
    part.parent.mkdir(parents=True)
    part.write_bytes(FILES["b.safetensors"][:100_000])
    res = fetch_from_seed(seed.url, TOKEN, "n2", dest, ["b.safetensors"])
    assert res.fetched_bytes == len(FILES["b.safetensors"]) - 100_000
    assert (dest / "b.safetensors").read_bytes() == FILES["b.safetensors"]
    assert not (dest / ".cache").exists()


def test_a_flipped_byte_is_refetched(seed: SeedServer, tmp_path: Path) -> None:
    dest = tmp_path / "node2"
    part = partial_path(dest, "a.safetensors")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"A" * 999 + b"B")  # a wrong byte in the part already there
    res = fetch_from_seed(seed.url, TOKEN, "n2", dest, ["a.safetensors"])
    assert res.refetched == ("a.safetensors",)
    assert res.fetched_bytes == (len(FILES["a.safetensors"]) - 1000) + len(FILES["a.safetensors"])
    assert (dest / "a.safetensors").read_bytes() == FILES["a.safetensors"]


def test_a_seed_serving_bad_bytes_never_marks_complete(seed: SeedServer, tmp_path: Path) -> None:
    (seed.folder / "a.safetensors").write_bytes(b"X" * 300_000)  # damaged after its marker
    dest = tmp_path / "node2"
    with pytest.raises(PullError, match="sha256"):
        fetch_from_seed(seed.url, TOKEN, "n2", dest, ["a.safetensors"])
    assert not cache.is_complete(dest)


def test_not_enough_disk_is_refused_before_fetching(seed: SeedServer, tmp_path: Path) -> None:
    with pytest.raises(NotEnoughSpace, match="needs"):
        fetch_from_seed(seed.url, TOKEN, "n2", tmp_path / "n2", list(FILES), lambda p: 1000)
    assert seed.stats.snapshot()["sent"] == {}


@pytest.mark.parametrize("path", ["/manifest", "/files/a.safetensors"])
def test_the_token_is_required(seed: SeedServer, path: str) -> None:
    assert httpx.get(seed.url + path).status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert httpx.get(seed.url + path, headers=bad).status_code == 401


@pytest.mark.parametrize(
    "path",
    ["/files/../seed/config.json", "/files/%2e%2e/x", "/files/" + cache.MARKER, "/etc/passwd"],
)
def test_only_manifest_files_are_served(seed: SeedServer, path: str) -> None:
    r = httpx.get(seed.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404


def test_unknown_file_is_an_error(seed: SeedServer, tmp_path: Path) -> None:
    with pytest.raises(PullError, match="no nope"):
        fetch_from_seed(seed.url, TOKEN, "n2", tmp_path / "n2", ["nope"])


def test_a_folder_without_marker_is_not_served(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a complete"):
        SeedServer(tmp_path, TOKEN, "127.0.0.1")
