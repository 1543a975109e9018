"""Adapters to the model hubs' own client libraries, behind one small Protocol.

A hub resolves a source to an exact commit and the list of files with their published checksums,
and downloads one file into a folder, resuming a partial download left there. Endpoints and
tokens come from the hubs' usual variables (HF_ENDPOINT, HF_TOKEN; MODELSCOPE_DOMAIN,
MODELSCOPE_API_TOKEN), read when the adapter is built; they are never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from deepfleet.weights.sources import Source
from deepfleet.weights.verify import Expected


class HubError(RuntimeError):
    """The hub could not be reached or refused; the message names the source, never a token."""


class Hub(Protocol):
    def resolve(self, source: Source) -> tuple[str, list[Expected]]:
        """The commit `source` names (its revision, default `main`) and its files."""
        ...

    def download(self, source: Source, revision: str, name: str, folder: Path, force: bool) -> None:
        """Fetch `name` at `revision` into `folder`, resuming a partial file unless `force`."""
        ...


def _silent_tqdm() -> type[Any]:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    class Silent(tqdm):  # type: ignore[misc]
        """The caller draws progress from file sizes; the client's own bars stay quiet."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


class HuggingFaceHub:
    """huggingface_hub: the tree API gives size, git blob id and LFS sha256 per file."""

    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        self.endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
        self.token = token or os.environ.get("HF_TOKEN") or None

    def resolve(self, source: Source) -> tuple[str, list[Expected]]:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return self._resolve(source)
        except (HfHubHTTPError, OSError) as exc:
            raise HubError(f"{source}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None

    def _resolve(self, source: Source) -> tuple[str, list[Expected]]:
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        api = HfApi(endpoint=self.endpoint, token=self.token)
        sha = api.model_info(source.repo, revision=source.revision or "main").sha
        if sha is None:
            raise HubError(f"{source}: the hub gave no commit for this revision")
        files: list[Expected] = []
        for entry in api.list_repo_tree(source.repo, revision=sha, recursive=True):
            if not isinstance(entry, RepoFile):
                continue
            if entry.lfs is not None:
                files.append(Expected(entry.path, entry.size, "sha256", entry.lfs.sha256))
            else:
                files.append(Expected(entry.path, entry.size, "git-sha1", entry.blob_id))
        return sha, files

    def download(self, source: Source, revision: str, name: str, folder: Path, force: bool) -> None:
        """Resume from `<folder>/.cache/deepfleet/<name>.incomplete` with a Range request.

        huggingface_hub 2.4's hf_hub_download writes each attempt to a fresh process-unique temp
        file, so a killed process leaves nothing to resume; its `http_get` still resumes from a
        given offset (and restarts if the server ignores Range), so the partial file is ours.
        """
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        dest = folder / name
        part = partial_path(folder, name)
        if force:
            part.unlink(missing_ok=True)
            dest.unlink(missing_ok=True)
        url = hf_hub_url(source.repo, name, revision=revision, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
            if dest.is_file() and dest.stat().st_size == meta.size:
                return  # the checksum that follows decides whether to fetch again
            part.parent.mkdir(parents=True, exist_ok=True)
            with part.open("r+b" if part.exists() else "wb") as f:
                f.seek(0, os.SEEK_END)
                http_get(
                    meta.location,
                    f,
                    resume_size=f.tell(),
                    headers=build_hf_headers(token=self.token),
                    expected_size=meta.size,
                    tqdm_class=_silent_tqdm(),
                )
        except (HfHubHTTPError, OSError) as exc:
            raise HubError(f"{source}: {name}: {str(exc).splitlines()[0]}") from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        part.replace(dest)


def partial_path(folder: Path, name: str) -> Path:
    """Where a file's bytes accumulate until it is complete (inside the model folder, so the
    final rename stays on one file system)."""
    return folder / ".cache" / "deepfleet" / f"{name}.incomplete"


class ModelScopeHub:
    """modelscope (`pip install modelscope`): its file list gives size and sha256 per file."""

    def __init__(self) -> None:
        self.token = os.environ.get("MODELSCOPE_API_TOKEN") or None

    def resolve(self, source: Source) -> tuple[str, list[Expected]]:
        from modelscope.hub.api import HubApi  # type: ignore[import-not-found,unused-ignore]

        api = HubApi()
        if self.token:
            api.login(self.token)
        revision = source.revision or "master"
        entries = api.get_model_files(source.repo, revision=revision, recursive=True)
        files = [
            Expected(e["Path"], int(e["Size"]), "sha256", e["Sha256"])
            for e in entries
            if e.get("Type") == "blob"
        ]
        return revision, files

    def download(self, source: Source, revision: str, name: str, folder: Path, force: bool) -> None:
        from modelscope.hub.file_download import (  # type: ignore[import-not-found,unused-ignore]
            model_file_download,
        )

        if force:
            (folder / name).unlink(missing_ok=True)
        model_file_download(source.repo, name, revision=revision, local_dir=str(folder))


def hub_for(source: Source) -> Hub:
    if source.kind == "hf":
        return HuggingFaceHub()
    if source.kind == "modelscope":
        return ModelScopeHub()
    raise ValueError(f"{source}: only hf:// and modelscope:// sources are pulled")
