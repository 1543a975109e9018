"""A Plan as JSON (one object: model, cluster, layouts, recommended, alternatives) or as text."""

from __future__ import annotations

from typing import Any

from deepfleet.catalog.hardware import GB, GiB
from deepfleet.catalog.models import ModelFacts
from deepfleet.planner.layout import Layout
from deepfleet.planner.loadtime import Bandwidth, cold_start_json, describe, for_layout
from deepfleet.planner.plan import Plan


def describe_model(m: ModelFacts) -> str:
    """One line naming the architecture's memory-relevant traits."""
    attention = "MLA" if m.mla else ("MHA" if m.num_kv_heads == m.num_heads else "GQA")
    parts = [m.model_type, f"{m.num_layers} layers", f"{attention} {m.num_heads}/{m.num_kv_heads}"]
    if m.moe:
        parts.append(f"MoE {m.moe.routed_experts} experts top-{m.moe.experts_per_token}")
    return ", ".join(parts)


def layout_json(layout: Layout) -> dict[str, Any]:
    mem = layout.memory
    return {
        "tp": layout.tp,
        "pp": layout.pp,
        "dp": layout.dp,
        "attn_dp": layout.attn_dp,
        "ep": layout.ep,
        "devices": layout.devices_used,
        "feasible": layout.feasible,
        "reason": layout.reason,
        "per_device_bytes": {
            "capacity": mem.capacity,
            "budget": mem.budget,
            "weights": mem.weights,
            "kv": layout.kv_budget,
            "activation": mem.activation,
            "reserve": mem.reserve,
        },
        "kv_bytes_per_token_per_device": mem.kv_bytes_per_token,
        "kv_tokens": layout.kv_tokens,
        "max_concurrency": layout.max_concurrency,
        "concurrency": layout.concurrency,
        "decode_tokens_per_s": round(layout.decode_tokens_per_s, 1),
        "single_stream_tokens_per_s": round(layout.single_stream_tokens_per_s, 1),
        "engine_args": layout.engine_args(),
        "kv_cache_space_gib": layout.kv_cache_space_gib,
        "notes": list(layout.notes),
    }


def plan_json(plan: Plan, bw: Bandwidth | None = None) -> dict[str, Any]:
    """The machine-readable plan: `{"model", "cluster", "layouts", "recommended", ...}`."""
    m, c, bw = plan.model, plan.cluster, bw or Bandwidth()
    best = plan.recommended
    cold = for_layout(plan.weight_bytes, best, c.devices_per_node, bw) if best else None
    return {
        "model": {
            "name": m.name,
            "architecture": describe_model(m),
            "params": plan.params.total,
            "active_params": plan.params.active,
            "mtp_params": plan.params.mtp,
            "weight_format": plan.weight_format.name,
            "weight_bytes": plan.weight_bytes,
            "kv_dtype": plan.request.kv_dtype,
            "kv_bytes_per_token": plan.kv_bytes_per_token,
        },
        "cluster": {
            "device": c.device.name,
            "nodes": c.nodes,
            "devices_per_node": c.devices_per_node,
            "device_memory_bytes": c.device.memory_bytes,
        },
        "layouts": [layout_json(layout) for layout in plan.layouts],
        "recommended": layout_json(plan.recommended) if plan.recommended else None,
        "cold_start": cold_start_json(cold, bw) if cold else None,
        "alternatives": [
            {"change": a.change, "weight_format": a.weight_format, "layout": layout_json(a.layout)}
            for a in plan.alternatives
        ],
    }


def _g(n: float) -> str:
    return f"{n / GiB:.1f}"


def _row(layout: Layout, mark: str = " ") -> str:
    mem = layout.memory
    return (
        f"{mark} {layout.label:<26} {_g(mem.weights):>7} {_g(layout.kv_budget):>6} "
        f"{_g(mem.activation):>5} {_g(mem.reserve):>7} {layout.kv_tokens:>11,} "
        f"{layout.max_concurrency:>6,} {layout.decode_tokens_per_s:>12,.0f} "
        f"{layout.single_stream_tokens_per_s:>8,.0f}"
    )


def engine_flags(layout: Layout) -> str:
    """The layout's engine arguments as command-line flags."""
    flags = []
    for key, value in layout.engine_args().items():
        flag = "--" + key.replace("_", "-")
        flags.append(flag if value is True else f"{flag} {value}")
    if layout.kv_cache_space_gib is not None:
        flags.insert(0, f"VLLM_CPU_KVCACHE_SPACE={layout.kv_cache_space_gib}")
    return " ".join(flags)


def plan_text(plan: Plan, show_infeasible: int = 12, bw: Bandwidth | None = None) -> str:
    """A person's view: the model's numbers, each layout, the verdict and why."""
    m, c, p, fmt = plan.model, plan.cluster, plan.params, plan.weight_format
    context = plan.layouts[0].max_model_len if plan.layouts else 0
    mtp = f" (+{p.mtp / 1e9:.1f}B MTP, not loaded)" if p.mtp and not plan.request.mtp else ""
    lines = [
        f"{m.name}: {describe_model(m)}",
        f"  parameters {p.total / 1e9:.2f}B{mtp}, {p.active / 1e9:.1f}B read per token",
        f"  weights {fmt.name} ({fmt.description}): {plan.weight_bytes / GB:,.1f} GB",
        f"  KV cache {plan.kv_bytes_per_token:,} bytes/token ({plan.request.kv_dtype}); "
        f"{plan.kv_bytes_per_token * context / GB:.2f} GB per {context:,}-token sequence",
        f"cluster: {c.nodes} node(s) x {c.devices_per_node} {c.device.name} "
        f"({c.device.memory_bytes / GiB:.1f} GiB, {c.device.interconnect})",
        "",
        "  layout (GiB per device)    weights     kv   act reserve   kv tokens  seqs* "
        "decode tok/s 1-stream",
    ]
    feasible = [layout for layout in plan.layouts if layout.feasible]
    best = plan.recommended
    lines += [_row(x, ">" if x is best else " ") for x in feasible] or ["  (none fits)"]
    lines.append(
        "  > recommended; * sequences of max_model_len held at once per replica; "
        "tok/s: roofline, whole cluster"
    )
    rejected = [layout for layout in plan.layouts if not layout.feasible]
    if rejected:
        lines += ["", "does not fit:"]
        lines += [f"  {x.label:<26} {x.reason}" for x in rejected[:show_infeasible]]
        if len(rejected) > show_infeasible:
            lines.append(f"  ... and {len(rejected) - show_infeasible} more (--all shows them)")
    lines.append("")
    if best is not None:
        lines += [
            f"recommended: {best.label} on {best.devices_used} of {c.devices} devices, "
            f"max_model_len {best.max_model_len:,}, up to {best.max_concurrency * best.dp:,} "
            f"full-length sequences, ~{best.decode_tokens_per_s:,.0f} tok/s roofline",
            f"  engine: {engine_flags(best)}",
            "  " + describe(for_layout(plan.weight_bytes, best, c.devices_per_node, bw)),
        ]
        lines += [f"  note: {n}" for n in best.notes]
    else:
        lines.append("nothing fits: " + (rejected[0].reason if rejected else "no layout"))
        lines += [
            f"  instead: {a.change} -> {a.layout.label}, max_model_len "
            f"{a.layout.max_model_len:,}, {a.layout.max_concurrency * a.layout.dp:,} sequences"
            for a in plan.alternatives
        ] or ["  no nearby alternative fits either"]
    return "\n".join(lines)


def formats_text(plans: list[Plan]) -> str:
    """One line per weight format: the layout it would get, or why none fits."""
    lines = ["by weight format:"]
    for p in plans:
        best, fmt = p.recommended, p.weight_format
        head = f"  {fmt.name:<5} {p.weight_bytes / GB:>9,.1f} GB  "
        if best is None:
            closest = p.layouts[0].reason if p.layouts else "no layout"
            lines.append(head + f"does not fit: {closest}")
        else:
            lines.append(
                head + f"fits: {best.label}, {best.max_concurrency * best.dp:,} x "
                f"{best.max_model_len:,}-token sequences, ~{best.decode_tokens_per_s:,.0f} tok/s"
            )
    return "\n".join(lines)
