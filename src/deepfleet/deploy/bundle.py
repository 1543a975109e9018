"""A rendered bundle: relative path -> text, plus the helpers every renderer writes with
(YAML documents in a stable order, shell scripts whose words are quoted once, here).

Secrets: a renderer generates each password or token with `new_secret()` (random per render)
and adds it with `add_private`, under SECRETS_DIR; private files are written 0600 (created
with that mode, so never readable by others even for a moment). Other files may only refer to
a secret (a compose variable, a kustomize secretGenerator file, a path), never hold it."""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SECRETS_DIR = "secrets"
SECRET_BYTES = 32


def new_secret() -> str:
    """A random password or token (hex: safe in URLs, shell words and YAML as is)."""
    return secrets.token_hex(SECRET_BYTES)


SCRIPT_HEAD = "#!/usr/bin/env bash\n# {what}\n# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.\nset -euo pipefail\n"  # noqa: E501


@dataclass
class Bundle:
    """Files of one render target; scripts are written executable, private files 0600."""

    files: dict[str, str] = field(default_factory=dict)
    scripts: set[str] = field(default_factory=set)
    private: set[str] = field(default_factory=set)

    def add(self, path: str, text: str) -> None:
        if path in self.files:
            raise ValueError(f"{path} rendered twice")
        self.files[path] = text

    def add_script(self, path: str, text: str) -> None:
        self.add(path, text)
        self.scripts.add(path)

    def add_private(self, path: str, text: str) -> None:
        """A file only its owner may read (secrets, or a config that holds one)."""
        self.add(path, text)
        self.private.add(path)

    def mode(self, path: str) -> int:
        return 0o600 if path in self.private else 0o755 if path in self.scripts else 0o644

    def write(self, out: Path) -> list[Path]:
        """Write every file under `out` (created if needed); returns the paths written."""
        written = []
        for rel, text in sorted(self.files.items()):
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = self.mode(rel)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), mode)
                f.write(text)
            written.append(target)
        return written


class _Dumper(yaml.SafeDumper):
    """Block style, keys in insertion order, multi-line strings as literal blocks, no
    anchors (each object written out where it is used), long lines kept whole."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(*docs: Mapping[str, Any]) -> str:
    """YAML documents separated by `---`, in the order given."""
    return "---\n".join(
        yaml.dump(dict(d), Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)
        for d in docs
    )


@dataclass(frozen=True)
class Var:
    """A shell word built from a variable, e.g. Var("NODE_IP", "VLLM_HOST_IP=") renders as
    "VLLM_HOST_IP=${NODE_IP}"; everything else is quoted literally."""

    name: str
    prefix: str = ""
    suffix: str = ""

    def __str__(self) -> str:
        for part in (self.prefix, self.suffix):
            if any(c in part for c in '"$`\\'):
                raise ValueError(f"unsafe text around ${{{self.name}}}: {part!r}")
        return f'"{self.prefix}${{{self.name}}}{self.suffix}"'


@dataclass(frozen=True)
class Raw:
    """A shell word written as given (already quoted by its builder)."""

    text: str

    def __str__(self) -> str:
        return self.text


Word = str | Var | Raw


def word(w: Word) -> str:
    return str(w) if isinstance(w, Var | Raw) else shlex.quote(w)


def command(words: Sequence[Word], indent: str = "") -> str:
    """One command over continued lines: each option with its value on a line of its own,
    and the positional words that follow an option on the next."""
    lines: list[list[str]] = [[]]
    expect_value = False
    for w in words:
        is_option = isinstance(w, str) and w.startswith("-")
        if is_option or (not expect_value and lines[-1] and _starts_option(lines[-1])):
            if lines[-1]:
                lines.append([])
            expect_value = is_option and isinstance(w, str) and "=" not in w
        else:
            expect_value = False
        lines[-1].append(word(w))
    body = f" \\\n{indent}    ".join(" ".join(line) for line in lines)
    return indent + body


def _starts_option(line: list[str]) -> bool:
    return line[0].startswith("-")


def assignments(values: Mapping[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def script(what: str, variables: Mapping[str, str], body: Iterable[str]) -> str:
    """A bash script: header, the variables filled from the config, then the body lines."""
    parts = [SCRIPT_HEAD.format(what=what)]
    if variables:
        parts.append("\n" + assignments(variables))
    parts.append("\n" + "\n".join(body).rstrip("\n") + "\n")
    return "".join(parts)


def env_flags(env: Mapping[str, Word]) -> list[Word]:
    """`-e K=V` pairs for docker run (values may be variables)."""
    out: list[Word] = []
    for key, value in env.items():
        out += ["-e", Var(value.name, f"{key}=") if isinstance(value, Var) else f"{key}={value}"]
    return out
