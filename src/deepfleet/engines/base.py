"""The engine adapter contract: a replica plan in, a command line and environment out, and
the facts about an engine that the rest of deepfleet needs.

Engines are external processes that speak the OpenAI HTTP API (principle 1); an adapter knows
how to start one, which path tells that it is ready, which devices it runs on, how it spans
nodes, its KV block size, how it offloads KV blocks and the metric names it reports load under.
Code outside engines/ asks the adapter (`get_adapter(model.engine)`) instead of comparing names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.config.schema import ModelSpec
from deepfleet.engines.load import LoadMetrics

Vendor = Literal["nvidia", "ascend", "cpu"]
MultiNode = Literal["ray", "rank-table"]
"""How one replica spans nodes: `ray`, vLLM's Ray executor (deepfleet places the replica as a
Ray placement group); `rank-table`, MindIE's multi-node mode (every node runs the daemon with a
rank table of all NPU addresses)."""

VISIBLE_DEVICES_ENV = {"nvidia": "CUDA_VISIBLE_DEVICES", "ascend": "ASCEND_RT_VISIBLE_DEVICES"}
"""The variable that hides devices from a process, per accelerator vendor."""


@dataclass(frozen=True)
class ReplicaPlan:
    """Everything needed to start one replica of a model on one set of devices."""

    model: ModelSpec
    replica_id: str
    model_path: str  # local folder or hub id handed to the engine
    host: str
    port: int
    kv_events_port: int | None = None
    # ipc://... (the engine binds it) or tcp://HOST:PORT (it connects); None: tcp on loopback.
    kv_events_endpoint: str | None = None
    tp: int = 1
    pp: int = 1
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    cpu_kv_cache_gib: float | None = None  # vLLM CPU build: KV cache space in GiB
    cpu_threads: str | None = None  # vLLM CPU build: cores to bind, e.g. "0-1" or "nobind"
    # CPU replicas: the CPUs its processes may run on (every core but the other replicas'
    # bound ones: fleet.cpu_share.cpu_affinity); None: inherit the controller's.
    cpu_affinity: tuple[int, ...] | None = None
    # "ray" when the replica spans nodes (vLLM's Ray executor); None: the engine's default.
    distributed_executor_backend: str | None = None
    python: str = "python3"
    # Local mode: the accelerator ids this replica gets (its visible-devices variable);
    # empty: the engine sees what its environment shows.
    devices: tuple[str, ...] = ()
    # Engine flags this model needs unless the config's engine_args say otherwise.
    engine_defaults: dict[str, Any] = field(default_factory=dict)
    # Environment this replica needs unless the config's engine_env says otherwise.
    env_defaults: dict[str, str] = field(default_factory=dict)
    # The key the engine requires on its API (only the gateway holds it); None: open.
    api_key: str | None = field(default=None, repr=False)
    # `prefill` or `decode` in a disaggregated model (deepfleet.fleet.pools), else empty.
    role: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    cpus: tuple[int, ...] | None = None  # the CPUs it may run on (sched_setaffinity); None: all


@dataclass(frozen=True)
class KvOffload:
    """What a replica needs to offload its KV cache: engine flags as `engine_args` keys (the
    model's own engine_args win) and environment (the model's engine_env wins)."""

    engine_args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


class EngineAdapter(Protocol):
    """One engine kind. Stateless: build a LaunchSpec from a ReplicaPlan, and answer facts."""

    @property
    def name(self) -> str:
        """The `engine` value of a model in fleet.yaml."""
        ...

    @property
    def health_path(self) -> str:
        """Answers 200 once the engine serves requests."""
        ...

    @property
    def vendor(self) -> Vendor:
        """The devices the engine runs on."""
        ...

    @property
    def visible_devices_env(self) -> str | None:
        """The variable that picks the devices a replica may use; None: it uses none."""
        ...

    @property
    def python_module(self) -> str | None:
        """The Python package the engine's server runs from (preflight checks it is
        installed); None: not a Python package."""
        ...

    @property
    def default_block_size(self) -> int:
        """Tokens per KV cache block when the config does not set one."""
        ...

    @property
    def multi_node(self) -> MultiNode | None:
        """How one replica spans nodes; None: it cannot."""
        ...

    @property
    def load_metrics(self) -> LoadMetrics:
        """The names the engine's /metrics reports its load under (see `parse_load`)."""
        ...

    def block_size(self, engine_args: dict[str, Any]) -> int:
        """Tokens per KV cache block with the model's `engine_args`."""
        ...

    def kv_offload(self, spec: KvCacheSpec, remote_url: str | None = None) -> KvOffload | None:
        """The arguments of `kv_cache:`'s offloading for one replica; None: the engine cannot
        offload (nothing to add). `remote_url`: where the engines reach the shared store when
        that differs from the config's address."""
        ...

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


def override_flags(base: list[str], user: list[str]) -> list[str]:
    """Append user flags, dropping any default flag (and its value) that the user also sets."""
    if not user:
        return base
    user_flags = flag_names(user)
    negated = {"--" + f[5:] for f in user_flags if f.startswith("--no-")}
    drop = user_flags | negated
    out: list[str] = []
    skip_value = False
    for arg in base:
        if skip_value and not arg.startswith("--"):
            skip_value = False
            continue
        skip_value = False
        if arg.startswith("--") and arg in drop:
            skip_value = True
            continue
        out.append(arg)
    return out + user
