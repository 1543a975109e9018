from pathlib import Path

import pytest

from deepfleet.weights import cache
from deepfleet.weights.pull import NotEnoughSpace, PullError, pull, select
from deepfleet.weights.sources import parse_source
from deepfleet.weights.verify import Expected, verify_cached
from tests.weights.fakes import FakeHub

SRC = parse_source("hf://org/model")
FILES = {"config.json": b"{}", "model.safetensors": b"w" * 4096, "README.md": b"hi"}


def roomy(_: Path) -> int:
    return 1 << 40


def test_pull_verifies_marks_and_skips_the_second_time(tmp_path: Path) -> None:
    hub = FakeHub(dict(FILES))
    seen: list[tuple[int, int]] = []
    res = pull(SRC, hub, tmp_path, progress=lambda d, t: seen.append((d, t)), free_space=roomy)
    assert res.path == tmp_path / "weights/hf/org--model/c0ffee"
    assert cache.is_complete(res.path) and not res.already_complete
    assert seen[-1] == (res.size, res.size) == (4100, 4100)
    again = pull(SRC, hub, tmp_path, free_space=roomy)
    assert again.already_complete and len(hub.downloads) == 3


def test_corrupt_download_is_caught_and_fetched_again(tmp_path: Path) -> None:
    hub = FakeHub(dict(FILES), corrupt_next={"model.safetensors"})
    res = pull(SRC, hub, tmp_path, free_space=roomy)
    assert res.refetched == ("model.safetensors",)
    assert ("model.safetensors", True) in hub.downloads
    assert (res.path / "model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_a_hub_that_keeps_serving_bad_bytes_never_marks_complete(tmp_path: Path) -> None:
    hub = FakeHub(dict(FILES))
    real_download = hub.download

    def always_bad(source, revision, name, folder, force):  # type: ignore[no-untyped-def]
        hub.corrupt_next.add("model.safetensors")
        real_download(source, revision, name, folder, force)

    hub.download = always_bad  # type: ignore[method-assign]
    with pytest.raises(PullError, match="fetched twice"):
        pull(SRC, hub, tmp_path, free_space=roomy)
    assert not cache.is_complete(cache.model_dir(tmp_path, SRC, "c0ffee"))


def test_full_disk_is_refused_before_any_download(tmp_path: Path) -> None:
    hub = FakeHub(dict(FILES))
    with pytest.raises(
        NotEnoughSpace, match=r"needs 4,100 bytes \(0\.0 GiB\) more, 100 bytes"
    ) as err:
        pull(SRC, hub, tmp_path, free_space=lambda _: 100)
    assert (err.value.needed, err.value.free) == (4100, 100)
    assert hub.downloads == []


def test_space_check_counts_only_what_is_missing(tmp_path: Path) -> None:
    folder = cache.model_dir(tmp_path, SRC, "c0ffee")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(FILES["model.safetensors"])
    res = pull(SRC, FakeHub(dict(FILES)), tmp_path, free_space=lambda _: 10)
    assert cache.is_complete(res.path)


def test_include_exclude() -> None:
    files = [Expected(n, 1, "sha256", "") for n in ("a.json", "b.safetensors", "c.bin")]
    names = [f.name for f in select(files, ["*.json", "*.safetensors"], ["b.*"])]
    assert names == ["a.json"]


def test_verify_cached_unmarks_a_flipped_byte(tmp_path: Path) -> None:
    res = pull(SRC, FakeHub(dict(FILES)), tmp_path, free_space=roomy)
    assert verify_cached(res.path) == {}
    p = res.path / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[2048] ^= 0xFF
    p.write_bytes(bytes(data))
    assert list(verify_cached(res.path)) == ["model.safetensors"]
    assert not cache.is_complete(res.path)


def test_list_and_rm(tmp_path: Path) -> None:
    pull(SRC, FakeHub(dict(FILES)), tmp_path, free_space=roomy)
    [m] = cache.list_models(tmp_path)
    assert (m.source, m.complete) == ("hf://org/model@c0ffee", True)
    assert cache.remove(tmp_path, SRC) == [m.path]
    assert cache.list_models(tmp_path) == []
