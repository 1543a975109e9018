"""vLLM's load_format checked against the installed vLLM, and model folders on network file
systems found from /proc/mounts."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from deepfleet.config.load import ConfigError, validate
from deepfleet.weights.loading import (
    load_format_problem,
    mount_of,
    slow_fs_warning,
    vllm_load_formats,
)


def test_formats_are_the_installed_vllms() -> None:
    loader = pytest.importorskip("vllm.model_executor.model_loader")
    assert vllm_load_formats() == get_args(loader.LoadFormats)


def test_vllms_parser_accepts_every_format() -> None:
    cli_args = pytest.importorskip("vllm.entrypoints.launchers.cli_args")
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = cli_args.make_arg_parser(FlexibleArgumentParser())
    formats = vllm_load_formats()
    assert formats
    for fmt in formats:
        assert parser.parse_args(["--model", "m", "--load-format", fmt]).load_format == fmt


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("auto", True),
        ("fastsafetensors", True),
        ("runai_streamer", True),
        ("fastsafetensor", False),
    ],
)
def test_load_format_in_the_config(value: str, ok: bool) -> None:
    if vllm_load_formats() is None:
        pytest.skip("vLLM is not installed here")
    raw = {"models": [{"name": "m", "source": "bundled", "engine": "vllm-cpu",
                       "engine_args": {"load_format": value}}]}  # fmt: skip
    if ok:
        validate(raw, "fleet.yaml")
        return
    with pytest.raises(ConfigError) as err:
        validate(raw, "fleet.yaml")
    assert "engine_args.load_format" in str(err.value.problems)
    assert "fastsafetensors" in str(err.value.problems)  # the valid names are listed


def test_without_vllm_nothing_is_refused() -> None:
    assert load_format_problem("anything", None) is None


MOUNTS = """\
/dev/nvme0n1p1 / ext4 rw 0 0
/dev/nvme1n1 /data xfs rw 0 0
10.0.0.5:/export /data/models nfs4 rw 0 0
s3fs /mnt/bucket fuse.s3fs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/data/x", ("/data", "xfs")), ("/data/models/r1", ("/data/models", "nfs4")),
     ("/data/modelsx", ("/data", "xfs")), ("/home/u", ("/", "ext4")),
     ("/mnt/bucket/m", ("/mnt/bucket", "fuse.s3fs"))],
)  # fmt: skip
def test_mount_of(path: str, expected: tuple[str, str]) -> None:
    assert mount_of(Path(path), MOUNTS) == expected


def test_network_and_fuse_folders_warn(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    warning = slow_fs_warning(Path("/data/models/r1"), mounts)
    assert warning is not None and "nfs4" in warning
    assert "fuse.s3fs" in (slow_fs_warning(Path("/mnt/bucket/m"), mounts) or "")
    assert slow_fs_warning(Path("/data/x"), mounts) is None
