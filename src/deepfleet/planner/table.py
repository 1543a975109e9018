"""The planning document's VRAM table, corrected: each number computed from the architecture.

The document's figures are parameters x 2 bytes x an overhead (1.3 for the distills, 1.15 for
R1), from nominal sizes. The corrected rows give the computed parameter count, the weights in
the format the model ships in (R1: FP8 with block scales), the KV cache a 32K-token reasoning
trace needs, and the smallest set of devices the planner finds for one and for eight such
traces at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepfleet.catalog.hardware import GB, get_device
from deepfleet.catalog.models import ModelFacts, load_model_facts
from deepfleet.planner.formats import get_format
from deepfleet.planner.kv import kv_bytes_per_token
from deepfleet.planner.layout import ClusterShape, PlanRequest
from deepfleet.planner.params import count_params
from deepfleet.planner.plan import model_weight_bytes, plan

TRACE_TOKENS = 32768
"""A long R1 reasoning trace (prompt + thinking + answer)."""

BLOG_TABLE: tuple[tuple[str, float, float], ...] = (
    # (catalog name, nominal billions, the planning document's "minimum VRAM" in GB)
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1.5, 3.9),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 7, 18),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", 8, 21),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 14, 36),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 32, 82),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 70, 181),
    ("deepseek-ai/DeepSeek-R1", 671, 1543),
)

FIT_DEVICES = ("RTX-4090", "A100-80GB", "H200")
"""Devices the table sizes each model for: a consumer card, an Ampere and a Hopper GPU."""
_SHAPES = ((1, 1), (1, 2), (1, 4), (1, 8), (2, 8), (4, 8), (8, 8), (16, 8))


@dataclass(frozen=True)
class TableRow:
    name: str
    nominal_b: float
    blog_gb: float
    params: int
    weight_format: str
    weight_bytes: int
    bf16_bytes: int
    kv_bytes_per_token: int
    trace_kv_bytes: int
    smallest: tuple[str, ...]
    """Per FIT_DEVICES entry: the smallest cluster serving one 32K trace, e.g. "2 x H200"."""
    smallest_8: tuple[str, ...]
    """The same for eight concurrent 32K traces."""


def smallest_cluster(model: ModelFacts, device_name: str, concurrency: int) -> str:
    """The fewest devices (in _SHAPES order) on which `concurrency` 32K traces fit."""
    device = get_device(device_name)
    request = PlanRequest(max_model_len=TRACE_TOKENS, concurrency=concurrency)
    for nodes, per_node in _SHAPES:
        result = plan(model, ClusterShape(device, nodes, per_node), request, alternatives=False)
        if result.recommended is not None:
            best = result.recommended
            return f"{best.devices_used}" + (f" ({nodes}x{per_node})" if nodes > 1 else "")
    return "> 128"


def table_rows() -> tuple[TableRow, ...]:
    """One corrected row per model of the planning document's table."""
    rows = []
    for name, nominal, blog in BLOG_TABLE:
        m = load_model_facts(name)
        fmt = get_format(None, m.shipped_format)
        kv = kv_bytes_per_token(m, 2)
        rows.append(
            TableRow(
                name=name.split("/", 1)[1],
                nominal_b=nominal,
                blog_gb=blog,
                params=count_params(m).total,
                weight_format=fmt.name,
                weight_bytes=model_weight_bytes(m, fmt),
                bf16_bytes=model_weight_bytes(m, get_format("bf16", m.shipped_format)),
                kv_bytes_per_token=kv,
                trace_kv_bytes=kv * TRACE_TOKENS,
                smallest=tuple(smallest_cluster(m, d, 1) for d in FIT_DEVICES),
                smallest_8=tuple(smallest_cluster(m, d, 8) for d in FIT_DEVICES),
            )
        )
    return tuple(rows)


ASSUMPTIONS = (
    "GB = 10^9 bytes. Parameters are counted from each config.json (embeddings, attention, "
    "MLP/experts, norms, lm_head); R1's MTP layer (11.6B) is left out: vLLM loads it only "
    "for speculative decoding.",
    "Weights in the format the model ships in: the distills in bf16, R1 in FP8 (e4m3, one fp32 "
    "scale per 128x128 block; embeddings, norms, router and lm_head stay bf16). R1 in bf16 "
    "would be the number in brackets.",
    "KV cache in bf16: GQA 2 x layers x KV heads x head_dim x 2 bytes per token; R1's MLA "
    "caches a 576-wide latent per layer, 70,272 bytes per token, and every TP rank holds all "
    "of it. An fp8 KV cache halves the column.",
    f"A trace is {TRACE_TOKENS:,} tokens, the long end of R1's 8-32K reasoning traces.",
    "Smallest fit: the planner's least devices (1, 2, 4, 8 per node, then 2-16 nodes of 8) "
    "holding the weights, the traces' KV cache, vLLM's activation peak, CUDA graphs and "
    "runtime reserve under gpu_memory_utilization 0.92, with vLLM's default batch settings.",
)


def table_markdown(rows: tuple[TableRow, ...]) -> str:
    """The corrected table in Markdown, the document's number beside the new one."""
    fits = " / ".join(d.replace("RTX-", "") for d in FIT_DEVICES)
    head = (
        "| Model | Document: params, GB | Params (computed) | Weights | KV per token | "
        f"KV per 32K trace | Devices for 1 trace ({fits}) | Devices for 8 traces |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    body = []
    for r in rows:
        bf16 = f" [bf16 {r.bf16_bytes / GB:,.0f}]" if r.weight_format != "bf16" else ""
        body.append(
            f"| {r.name} | {r.nominal_b:g}B, ~{r.blog_gb:,g} GB | {r.params / 1e9:,.2f}B | "
            f"{r.weight_bytes / GB:,.1f} GB {r.weight_format}{bf16} | "
            f"{r.kv_bytes_per_token / 1e3:,.1f} kB | {r.trace_kv_bytes / GB:.2f} GB | "
            f"{' / '.join(r.smallest)} | {' / '.join(r.smallest_8)} |"
        )
    notes = "\n".join(f"- {a}" for a in ASSUMPTIONS)
    return f"{head}\n" + "\n".join(body) + f"\n\nAssumptions:\n{notes}\n"
