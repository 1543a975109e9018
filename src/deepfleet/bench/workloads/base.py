"""The workload contract: a named builder turns options into chains of requests."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from deepfleet.bench.client import RequestSpec


@dataclass(frozen=True, slots=True)
class Workload:
    """Requests to run: chains run in parallel, each chain's requests one after another.

    `schedule_s`, when set, gives each chain's first request a start time (trace replay)."""

    name: str
    chains: tuple[tuple[RequestSpec, ...], ...]
    schedule_s: tuple[float, ...] | None = None

    @property
    def size(self) -> int:
        return sum(len(chain) for chain in self.chains)


Builder = Callable[[int, Mapping[str, str], random.Random], Workload]

Options = TypeVar("Options")


def parse_options(cls: type[Options], params: Mapping[str, str]) -> Options:
    """Build an options dataclass from key=value strings, converting to each field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for key, raw in params.items():
        default = getattr(cls(), key)
        kind = type(default)
        try:
            values[key] = kind(raw) if kind is not bool else raw.lower() in ("1", "true", "yes")
        except ValueError as exc:
            raise ValueError(f"option {key}={raw!r}: expected {kind.__name__}") from exc
    return cls(**values)


def chat(system: str | None, user: str, max_tokens: int, session: str | None = None) -> RequestSpec:
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": user})
    return RequestSpec(messages=tuple(messages), max_tokens=max_tokens, session=session)


def as_chains(chains: Sequence[Sequence[RequestSpec]]) -> tuple[tuple[RequestSpec, ...], ...]:
    return tuple(tuple(chain) for chain in chains)
