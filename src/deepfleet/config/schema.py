"""The fleet.yaml schema: one typed field per knob, each with the description the CLI shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from deepfleet.config.autoscale import AutoscaleSpec, ReplicaRange
from deepfleet.config.base import Strict
from deepfleet.config.cluster import ClusterSpec
from deepfleet.config.deploy import DeploySpec
from deepfleet.config.disagg import DisaggregationSpec
from deepfleet.config.engines import ENGINE_NAMES, EngineName
from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.config.routing import POLICY_NAMES
from deepfleet.config.state import StateSpec
from deepfleet.config.ui import UiSpec
from deepfleet.weights.loading import load_format_problem, vllm_load_formats
from deepfleet.weights.sources import Source, SourceError, parse_source

BUNDLED = "bundled"


class ParallelSpec(Strict):
    tp: int = Field(1, ge=1, description="Tensor-parallel size: devices inside one node per stage.")
    pp: int = Field(1, ge=1, description="Pipeline-parallel size: stages, usually one per node.")
    dp: int = Field(1, ge=1, description="Data-parallel attention ranks inside one replica.")
    ep: bool = Field(False, description="Expert parallelism for MoE layers.")


class ModelSpec(Strict):
    name: str = Field(
        min_length=1,
        # Segments separated by single slashes, each starting with a letter or digit: no
        # `..`, no leading or doubled slash, so a name used in a file name (its replicas' log
        # files) stays inside its folder.
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*(/[A-Za-z0-9][A-Za-z0-9._:-]*)*$",
        max_length=200,
        description="Model name clients send in the `model` field: letters, digits, `._:-`, "
        "and `/` between parts (e.g. org/model); no `..` part.",
    )
    source: str = Field(
        BUNDLED,
        description="`bundled` (the demo model), a local folder holding config.json, "
        "hf://org/name[@revision] or modelscope://org/name[@revision] (pulled into the cache by "
        "`deepfleet models pull` and `up`), or a bare hub id such as deepseek-ai/DeepSeek-R1 "
        "or catalog name (fetched by the engine itself).",
    )
    engine: EngineName = Field(
        "vllm-cpu",
        description=f"Engine that serves the replicas: one of {', '.join(sorted(ENGINE_NAMES))}.",
    )
    replicas: int | Literal["auto"] | ReplicaRange = Field(
        1,
        description="Independent copies of the model; `auto` lets the planner decide; "
        "`{min: 0, max: 2}` lets the autoscaler decide between the two (see `autoscale`).",
    )
    autoscale: AutoscaleSpec | None = Field(
        None,
        description="Latency targets and cool-downs of the autoscaler; needs `replicas: "
        "{min, max}` (defaults apply when that is set and this is not).",
    )
    disaggregation: DisaggregationSpec | None = Field(
        None,
        description="Serve prefill and decode on separate engine pools joined by a KV "
        "connector (docs/pd.md); None: every replica does both.",
    )
    parallel: ParallelSpec | Literal["auto"] = Field(
        "auto", description="Layout of one replica; `auto` lets the planner decide."
    )
    dtype: str | None = Field(
        None, description="Weight format (bf16, fp8, int8, int4); None: as shipped."
    )
    kv_cache_dtype: str | None = Field(
        None, description="KV cache dtype (auto, fp8); None: engine default."
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + output in tokens; None: the planner chooses."
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra engine flags passed as is (`enable_chunked_prefill: true` becomes "
        "`--enable-chunked-prefill`).",
    )
    engine_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the engine process."
    )
    routing: str = Field(
        "round_robin",
        description="Routing policy across this model's replicas: " + ", ".join(POLICY_NAMES) + ".",
    )
    trust_remote_code: bool = Field(
        False, description="Let the engine run Python code shipped with the model."
    )
    migration_limit: int = Field(
        3,
        ge=0,
        le=100,
        description="Times one stream may move to another replica when its engine fails"
        " mid-stream (docs/migration.md); 0 turns migration off for this model.",
    )
    queue_timeout_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="With no ready replica while one is starting or restarting, how long a "
        "request waits for it in the gateway before 503 (0: no wait).",
    )

    @field_validator("engine", mode="before")
    @classmethod
    def _known_engine(cls, v: object) -> object:
        if isinstance(v, str) and v not in ENGINE_NAMES:
            raise ValueError(f"unknown engine; available: {', '.join(sorted(ENGINE_NAMES))}")
        return v

    @field_validator("routing")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in POLICY_NAMES:
            raise ValueError(f"unknown routing policy; known: {', '.join(POLICY_NAMES)}")
        return v

    @field_validator("source")
    @classmethod
    def _valid_source(cls, v: str) -> str:
        try:
            parse_source(v)
        except SourceError as exc:
            if not Path(v).expanduser().exists():  # a relative folder such as `models/x`
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _known_load_format(self) -> ModelSpec:
        value = self.engine_args.get("load_format", self.engine_args.get("load-format"))
        if value is not None and self.engine in ("vllm", "vllm-cpu"):
            problem = load_format_problem(value, vllm_load_formats())
            if problem:
                raise ValueError(f"engine_args.load_format: {problem}")
        return self

    @field_validator("replicas", mode="before")
    @classmethod
    def _replica_range(cls, v: object) -> object:
        return ReplicaRange.parse(v) if isinstance(v, dict) else v

    @field_validator("replicas")
    @classmethod
    def _positive_replicas(cls, v: int | str | ReplicaRange) -> int | str | ReplicaRange:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1 or `auto`")
        return v

    @field_validator("autoscale")
    @classmethod
    def _autoscale_needs_range(
        cls, v: AutoscaleSpec | None, info: ValidationInfo
    ) -> AutoscaleSpec | None:
        if v is not None and not isinstance(info.data.get("replicas"), ReplicaRange):
            raise ValueError("needs `replicas: {min, max}` (a fixed count is not scaled)")
        return v

    @property
    def fixed_replicas(self) -> int | None:
        """Replicas to start with: the count, max(min, 1) for a range, None for `auto`."""
        if isinstance(self.replicas, ReplicaRange):
            return max(self.replicas.min, 1)
        return self.replicas if isinstance(self.replicas, int) else None

    @property
    def is_bundled(self) -> bool:
        return self.source == BUNDLED

    @property
    def is_local_path(self) -> bool:
        """A source that names a folder on disk (absolute, ./, ../ or ~/), not a hub id."""
        s = self.source
        return s.startswith(("/", "./", "../", "~")) or Path(s).expanduser().exists()

    @property
    def weights_source(self) -> Source | None:
        """The parsed source when deepfleet pulls it (hf://, modelscope://), else None."""
        try:
            parsed = parse_source(self.source)
        except SourceError:
            return None
        return parsed if parsed.pullable else None


class AdmissionSpec(Strict):
    max_in_flight: int = Field(
        1024, ge=1, description="Requests each gateway worker sends upstream at once."
    )
    max_queue: int = Field(
        1024, ge=0, description="Requests each worker holds waiting; beyond it: 429 + Retry-After."
    )
    queue_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait in the queue; then 503 (no capacity)."
    )


class GatewaySpec(Strict):
    host: str = Field("127.0.0.1", description="Address the gateway binds; loopback unless set.")
    port: int = Field(8000, ge=1, le=65535, description="Gateway port.")
    workers: int = Field(1, ge=1, le=64, description="Gateway processes sharing the port.")
    instances: int = Field(
        1,
        ge=1,
        le=32,
        description="Separate gateway processes on loopback ports port+1..port+N behind HAProxy "
        "on `port` (a dead one fails only its own streams; docs/lb.md); >1 needs workers: 1.",
    )
    keys_db: Path | None = Field(
        None, description="SQLite file of API keys and limits; None: keys.db in the state dir."
    )
    state: StateSpec = Field(
        default_factory=StateSpec,
        description="Where keys, usage and rate limits live: sqlite (one host) or postgres "
        "(several gateways, limits exact across them; docs/ha.md).",
    )
    metrics_token: str | None = Field(
        None, description="Bearer token that /metrics requires; None: /metrics is open."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body; larger ones get 413."
    )
    read_timeout_s: float = Field(
        600.0, gt=0, description="Longest silence from an engine before the request fails."
    )
    drain_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    reasoning_cap: int | None = Field(
        None, ge=1, description="Default cap on reasoning chunks (thinking tokens) per request."
    )
    admission: AdmissionSpec = Field(default_factory=AdmissionSpec)
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names the gateway answers besides loopback names "
        "(localhost, 127.0.0.1, [::1]), IP literals and its bind address; any port. Others get "
        "400 (DNS rebinding). `*` allows every name. Rendered bundles add their service names.",
    )
    head_timeout_s: float = Field(
        10.0, gt=0, description="Longest time for a request head to arrive (slowloris)."
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="Longest time for a request body to arrive after its head; 408."
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request head (line and headers); 431 beyond."
    )
    max_connections: int = Field(
        4096, ge=1, description="Open connections per worker; requests beyond get 503."
    )
    max_prompt_batch: int = Field(
        64, ge=1, le=4096, description="Most prompts in one /v1/completions request; 400 beyond."
    )
    stall_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest silence of an engine after a stream's first bytes; then the "
        "stream migrates to another replica (docs/migration.md).",
    )

    @model_validator(mode="after")
    def _instances_or_workers(self) -> GatewaySpec:
        if self.instances > 1 and self.workers > 1:
            raise ValueError(
                "gateway.instances > 1 needs gateway.workers: 1 (choose one of the two)"
            )
        return self


class FleetConfig(Strict):
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    models: list[ModelSpec] = Field(min_length=1, description="The models the fleet serves.")
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    kv_cache: KvCacheSpec = Field(
        default_factory=KvCacheSpec,
        description="KV cache layer: KV-aware routing knobs, and KV offloading/sharing "
        "(vLLM native CPU or LMCache) on GPU engines.",
    )
    state_dir: Path | None = Field(
        None,
        description="Where logs, pid files and the fleet state live; None: the user state dir.",
    )
    deploy: DeploySpec = Field(
        default_factory=DeploySpec,
        description="Nodes, images, volumes and addresses for `deepfleet render` (Kubernetes, "
        "docker compose, Ascend).",
    )
    ui: UiSpec = Field(
        default_factory=UiSpec,
        description="Open-WebUI, the chat UI for people, started by `deepfleet up --ui` and "
        "connected to the gateway with its own API key.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> FleetConfig:
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"model name {m.name!r} appears twice in `models`")
            seen.add(m.name)
        return self


def default_config() -> FleetConfig:
    """The embedded default: one replica of the bundled model on vLLM's CPU build."""
    return FleetConfig(models=[ModelSpec(name="SmolLM2-135M-Instruct", source=BUNDLED)])
