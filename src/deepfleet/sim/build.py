"""Build simulated engines from a model, a device and a layout, with the planner's numbers for
everything not given: KV tokens, max_num_seqs, max_num_batched_tokens, block size, context."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import ModelFacts, load_model_facts
from deepfleet.planner.formats import get_format
from deepfleet.planner.layout import ClusterShape, PlanRequest, evaluate
from deepfleet.planner.memory import Parallelism
from deepfleet.sim.engine import EngineConfig
from deepfleet.sim.profile import LatencyProfile, planner_profile

R1_MARKERS = ("deepseek-r1", "r1-distill", "deepseek-ai/deepseek-r1")


@dataclass(frozen=True)
class SimSpec:
    """What `deepfleet sim` was asked for; None means the planner decides."""

    model: str
    gpu: str
    tp: int = 1
    pp: int = 1
    served_model_name: str | None = None
    tokenizer: str | None = None
    kv_tokens: int | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    cpu_kv_space_gib: int = 1
    weight_format: str | None = None
    efficiency: float | None = None
    reasoning_parser: bool | None = None


def is_reasoning_model(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in R1_MARKERS)


def tokenizer_folder(spec: SimSpec) -> str | None:
    if spec.tokenizer:
        return spec.tokenizer
    path = Path(spec.model).expanduser()
    return str(path) if (path / "tokenizer.json").is_file() else None


def build(
    spec: SimSpec, facts: ModelFacts | None = None
) -> tuple[EngineConfig, LatencyProfile, ModelFacts]:
    """`facts`, when given, describe the model instead of `spec.model`'s config."""
    facts = facts or load_model_facts(spec.model)
    device = get_device(spec.gpu)
    fmt = get_format(spec.weight_format, facts.shipped_format)
    layout = evaluate(
        facts,
        fmt,
        ClusterShape(device, nodes=1, devices_per_node=spec.tp * spec.pp),
        Parallelism(tp=spec.tp, pp=spec.pp),
        1,
        PlanRequest(
            weight_format=spec.weight_format,
            max_model_len=spec.max_model_len,
            max_num_seqs=spec.max_num_seqs,
            max_num_batched_tokens=spec.max_num_batched_tokens,
            block_size=spec.block_size,
            cpu_kv_space_gib=spec.cpu_kv_space_gib,
        ),
    )
    name = spec.served_model_name or spec.model
    reasoning = (
        spec.reasoning_parser
        if spec.reasoning_parser is not None
        else is_reasoning_model(name) or is_reasoning_model(facts.name)
    )
    # vLLM's own defaults, not the planner's concurrency estimate: the simulator behaves like
    # an engine started with the same arguments.
    config = EngineConfig(
        model=name,
        max_model_len=spec.max_model_len or layout.max_model_len,
        max_num_seqs=spec.max_num_seqs or device.default_max_num_seqs,
        max_num_batched_tokens=layout.max_num_batched_tokens,
        block_size=layout.block_size,
        kv_tokens=spec.kv_tokens or max(layout.kv_tokens, layout.block_size),
        reasoning_parser=reasoning,
    )
    profile = planner_profile(
        facts, spec.gpu, spec.tp, spec.pp, weight_format=spec.weight_format,
        efficiency=spec.efficiency,
    )  # fmt: skip
    return config, profile, facts
