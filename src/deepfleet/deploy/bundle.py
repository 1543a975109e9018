"""A rendered bundle: relative path -> text, plus the helpers every renderer writes with
(YAML documents in a stable order, shell scripts whose words are quoted once, here)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCRIPT_HEAD = "#!/usr/bin/env bash\n# {what}\n# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.\nset -euo pipefail\n"  # noqa: E501


@dataclass
class Bundle:
    """Files of one render target; scripts are written executable."""

    files: dict[str, str] = field(default_factory=dict)
    scripts: set[str] = field(default_factory=set)

    def add(self, path: str, text: str) -> None:
        if path in self.files:
            raise ValueError(f"{path} rendered twice")
        self.files[path] = text

    def add_script(self, path: str, text: str) -> None:
        self.add(path, text)
        self.scripts.add(path)

    def write(self, out: Path) -> list[Path]:
        """Write every file under `out` (created if needed); returns the paths written."""
        written = []
        for rel, text in sorted(self.files.items()):
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(0o755 if rel in self.scripts else 0o644)
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
