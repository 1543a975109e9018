"""The engine adapter contract: a replica plan in, a command line and environment out.

Engines are external processes that speak the OpenAI HTTP API (principle 1); an adapter only
knows how to start one and which paths tell that it is ready.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deepfleet.config.schema import ModelSpec


@dataclass(frozen=True)
class ReplicaPlan:
    """Everything needed to start one replica of a model on one set of devices."""

    model: ModelSpec
    replica_id: str
    model_path: str  # local folder or hub id handed to the engine
    host: str
    port: int
    kv_events_port: int | None = None
    tp: int = 1
    pp: int = 1
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    cpu_kv_cache_gib: float | None = None  # vLLM CPU build: KV cache space in GiB
    cpu_threads: str | None = None  # vLLM CPU build: cores to bind, e.g. "0-1" or "nobind"
    # "ray" when the replica spans nodes (vLLM's Ray executor); None: the engine's default.
    distributed_executor_backend: str | None = None
    python: str = "python3"
    # Local mode: the accelerator ids this replica gets (its visible-devices variable);
    # empty: the engine sees what its environment shows.
    devices: tuple[str, ...] = ()
    # Engine flags this model needs unless the config's engine_args say otherwise.
    engine_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


class EngineAdapter(Protocol):
    """One engine kind. Stateless: build a LaunchSpec from a ReplicaPlan."""

    @property
    def name(self) -> str: ...

    @property
    def health_path(self) -> str: ...

    def launch_spec(self, plan: ReplicaPlan) -> LaunchSpec: ...


def engine_flags(args: dict[str, Any]) -> list[str]:
    """Turn `engine_args` into CLI flags the way vLLM and SGLang spell them.

    `key_name: true` -> `--key-name`; `false` -> `--no-key-name`; a list repeats values after one
    flag; a mapping becomes JSON; None drops the flag.
    """
    out: list[str] = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, list | tuple):
            out += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            out += [flag, json.dumps(value, separators=(",", ":"))]
        else:
            out += [flag, str(value)]
    return out


def flag_names(argv: list[str]) -> set[str]:
    """The `--flag` names present in an argument list (to let engine_args override defaults)."""
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}
