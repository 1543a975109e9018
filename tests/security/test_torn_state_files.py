"""Finding 19: fleet.json was written without fsync (a crash could leave it empty) and its temp
file was left behind on error; gateway.json was written in place (a reader could see half of
it). Both go through one atomic write: temp file in the folder, fsync, rename, fsync folder,
temp file removed on error."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from deepfleet.config import FleetConfig
from deepfleet.fleet.controller import GATEWAY_SETTINGS, write_gateway_settings
from deepfleet.fleet.state import FleetState, read_state, write_state


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fleet.json"
    write_state(path, FleetState(controller_pid=1, gateway_url="http://old"))
    cfg = FleetConfig.model_validate({"models": [{"name": "m"}]})
    write_gateway_settings(cfg, tmp_path)
    settings_before = (tmp_path / GATEWAY_SETTINGS).read_text()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    write_state(path, FleetState(controller_pid=2, gateway_url="http://new"))
    assert len(synced) >= 2, "the file and its folder are fsynced"

    real_replace = os.replace
    renamed: list[str] = []

    def replace(src: object, dst: object) -> None:
        renamed.append(str(dst))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    write_gateway_settings(cfg, tmp_path)
    assert str(tmp_path / GATEWAY_SETTINGS) in renamed, "gateway.json is replaced atomically"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_state(path, FleetState(controller_pid=3, gateway_url="http://lost"))
    with pytest.raises(OSError):
        write_gateway_settings(cfg, tmp_path)
    state = read_state(path)
    assert state is not None and state.gateway_url == "http://new"
    assert (tmp_path / GATEWAY_SETTINGS).read_text() == settings_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.json", GATEWAY_SETTINGS]
