"""How an engine reads the weights: vLLM's `load_format` and the file system under the folder.

`load_format` (in `engine_args`) is checked against the installed vLLM's own list, read from
its source (`LoadFormats` in vllm/model_executor/model_loader/__init__.py) rather than by
importing vLLM, which takes seconds and a GPU stack; formats that need an extra package say
which. A model folder on a network or FUSE file system is read at that file system's speed, not
the local disk's: the planner's estimate and the cold start suffer, so the doctor warns.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

LOADER_MODULE = ("model_executor", "model_loader", "__init__.py")
EXTRA_PACKAGES = {
    "fastsafetensors": "fastsafetensors",
    "runai_streamer": "runai_model_streamer",
    "runai_streamer_sharded": "runai_model_streamer",
    "instanttensor": "instanttensor",
    "tensorizer": "tensorizer",
}
"""Load formats that need a package besides vLLM: format -> module to import."""
NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
     "beegfs", "afs", "davfs", "sshfs", "virtiofs"}
)  # fmt: skip


def vllm_load_formats() -> tuple[str, ...] | None:
    """The load formats the installed vLLM accepts, or None when vLLM is not installed here."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations)), *LOADER_MODULE)
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "LoadFormats" for t in node.targets)
            and isinstance(node.value, ast.Subscript)
            and isinstance(node.value.slice, ast.Tuple)
        ):
            return tuple(
                e.value
                for e in node.value.slice.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
    return None


def load_format_problem(value: object, formats: tuple[str, ...] | None) -> str | None:
    """Why `value` is not a load format of the installed vLLM, or None (also without vLLM)."""
    if formats is None or value in formats:
        return None
    return f"{value!r} is not a load format of the installed vLLM; it has: {', '.join(formats)}"


def missing_package(value: object) -> str | None:
    """The extra package load format `value` needs and this machine lacks, as a message."""
    module = EXTRA_PACKAGES.get(str(value))
    if module and importlib.util.find_spec(module) is None:
        return f"{value!r} needs the `{module.replace('_', '-')}` package: pip install it"
    return None


def mount_of(path: Path, mounts_text: str) -> tuple[str, str]:
    """(mount point, fs type) of the mount holding `path`, from /proc/mounts' text."""
    best = ("/", "?")
    target = str(path.resolve())
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, parts[2])
    return best


def slow_fs_warning(path: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """A warning when `path` sits on a network or FUSE file system, else None."""
    try:
        text = mounts.read_text()
    except OSError:
        return None
    point, fstype = mount_of(path, text)
    if fstype in NETWORK_FS or fstype.startswith("fuse"):
        return (
            f"{path} is on {fstype} ({point}): engines read the weights at network speed; "
            "copy them to a local NVMe (`deepfleet models pull`/`spread` into a local cache)"
        )
    return None
