"""Load fleet.yaml into a FleetConfig; every problem becomes one line naming its field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from deepfleet.config.checks import deploy_problems
from deepfleet.config.pd_checks import disaggregation_problems
from deepfleet.config.schema import FleetConfig


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one human line per finding."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_positive_replicas(), union[int,literal['auto']]]",):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err: Any) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or "(" in p)))
    path = _field_path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key (remove it or check its spelling)"
    if kind == "missing":
        return f"{path}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    if kind not in ("model_type",) and not isinstance(given, dict | list) and given is not None:
        msg += f" (got {given!r})"
    return f"{path}: {msg}"


def validate(data: Any, source: str = "fleet.yaml") -> FleetConfig:
    """Validate parsed YAML, then check what the schema cannot: local model folders exist."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping with a `models` list"])
    try:
        cfg = FleetConfig.model_validate(data)
    except ValidationError as exc:
        lines = list(dict.fromkeys(_describe(e) for e in exc.errors()))
        raise ConfigError(source, lines) from None
    problems = []
    if cfg.cluster.mode == "local":
        for i, m in enumerate(cfg.models):
            if m.is_local_path and not (Path(m.source).expanduser() / "config.json").is_file():
                what = (
                    "does not exist"
                    if not Path(m.source).expanduser().exists()
                    else ("has no config.json")
                )
                problems.append(
                    f"models[{i}].source: model folder {m.source!r} {what} "
                    "(give a folder holding config.json, a hub id, or `bundled`)"
                )
    problems += deploy_problems(cfg)
    problems += disaggregation_problems(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def load(path: Path) -> FleetConfig:
    """Read and validate a fleet.yaml file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [f"{where}invalid YAML: {problem}"]) from None
    return validate(data, str(path))
