"""plan(): judge every layout of a model on a cluster, rank them, recommend one, and, when
nothing fits, say what would (another format, more nodes, a shorter context, an fp8 KV cache).

Ranking among feasible layouts: the most decode tokens/s (roofline, whole cluster, at the
requested concurrency or at as many sequences as fit), then the fewest devices, then the
least TP (fewer collectives). Infeasible layouts follow, largest replicas (closest to
fitting) first. The recommendation is the first, except that several replicas within 15% of
a lone replica's speed win: they survive a failed device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from deepfleet.catalog.models import ModelFacts
from deepfleet.planner.formats import FORMATS, WeightFormat, get_format, kv_dtype_bytes
from deepfleet.planner.kv import kv_bytes_per_token
from deepfleet.planner.layout import (
    MIN_CONTEXT,
    ClusterShape,
    Layout,
    PlanRequest,
    candidates,
    evaluate,
)
from deepfleet.planner.params import ParamCount, count_params, inventory

REDUNDANCY_TOLERANCE = 0.85
"""A layout of several replicas is preferred to a lone one that is at most this much faster."""
MAX_NODE_FACTOR = 8
"""Alternatives look for the smallest cluster up to this many times the given nodes."""


@dataclass(frozen=True)
class Alternative:
    """A change to the request or the cluster, and the layout it would get."""

    change: str
    layout: Layout
    weight_format: str


@dataclass(frozen=True)
class Plan:
    model: ModelFacts
    cluster: ClusterShape
    request: PlanRequest
    weight_format: WeightFormat
    params: ParamCount
    weight_bytes: int
    """Bytes of the whole model in `weight_format` (MTP excluded unless requested)."""
    kv_bytes_per_token: int
    """KV bytes per token of the whole model (all layers, one copy) at the KV dtype."""
    layouts: tuple[Layout, ...]
    recommended: Layout | None
    alternatives: tuple[Alternative, ...] = ()

    @property
    def feasible(self) -> bool:
        return self.recommended is not None


def _rank_key(layout: Layout) -> tuple[int, float, int, int]:
    if layout.feasible:
        return (0, -layout.decode_tokens_per_s, layout.devices_used, layout.tp)
    # Closest to fitting first: the largest replicas, then the lightest devices.
    return (1, 0.0, -layout.devices_per_replica, layout.memory.weights)


def _pick(ranked: tuple[Layout, ...]) -> Layout | None:
    """The fastest feasible layout, unless it is a lone replica and a layout of several
    replicas comes within REDUNDANCY_TOLERANCE of its speed: then that one, which survives
    a failed device."""
    feasible = [layout for layout in ranked if layout.feasible]
    if not feasible:
        return None
    best = feasible[0]
    if best.dp == 1:
        floor = best.decode_tokens_per_s * REDUNDANCY_TOLERANCE
        for layout in feasible[1:]:
            if layout.dp > 1 and layout.decode_tokens_per_s >= floor:
                return layout
    return best


def model_weight_bytes(model: ModelFacts, fmt: WeightFormat, mtp: bool = False) -> int:
    """Bytes of every weight of the model, stored once, in `fmt`."""
    inv = inventory(model)
    total = fmt.total_bytes(inv.embed) + fmt.total_bytes(inv.head)
    total += fmt.total_bytes(inv.dense_layer) * inv.dense_layers
    total += fmt.total_bytes(inv.moe_layer) * inv.moe_layers
    if mtp:
        layer = inv.moe_layer or inv.dense_layer
        total += (fmt.total_bytes(inv.mtp_extra) + fmt.total_bytes(layer)) * inv.mtp_layers
    return total


def _plan_only(model: ModelFacts, cluster: ClusterShape, request: PlanRequest) -> Plan:
    fmt = get_format(request.weight_format, model.shipped_format)
    if request.parallel is not None:
        par = request.parallel
        per_replica = par.devices
        dp = max(1, cluster.devices // per_replica) if per_replica <= cluster.devices else 0
        options = [(par, dp)]
    else:
        options = candidates(model, cluster)
    layouts = [evaluate(model, fmt, cluster, par, dp, request) for par, dp in options]
    for i, layout in enumerate(layouts):
        if layout.dp == 0:
            layouts[i] = replace(
                layout,
                feasible=False,
                reason=f"needs {layout.devices_per_replica} devices, the cluster has "
                f"{cluster.devices}",
            )
    ranked = tuple(sorted(layouts, key=_rank_key))
    best = _pick(ranked)
    return Plan(
        model=model,
        cluster=cluster,
        request=request,
        weight_format=fmt,
        params=count_params(model),
        weight_bytes=model_weight_bytes(model, fmt, request.mtp),
        kv_bytes_per_token=kv_bytes_per_token(model, kv_dtype_bytes(request.kv_dtype)),
        layouts=ranked,
        recommended=best,
    )


def _alternatives(
    model: ModelFacts, cluster: ClusterShape, request: PlanRequest
) -> list[Alternative]:
    found: list[Alternative] = []
    fmt = get_format(request.weight_format, model.shipped_format)

    def attempt(change: str, c: ClusterShape, r: PlanRequest) -> bool:
        p = _plan_only(model, c, r)
        if p.recommended is None:
            return False
        found.append(Alternative(change, p.recommended, p.weight_format.name))
        return True

    if request.parallel is not None:
        attempt(
            "let the planner choose the layout (parallel: auto)",
            cluster,
            replace(request, parallel=None),
        )
    # Another format: any that runs here when the asked one does not, else a smaller one.
    runs = fmt.unsupported_reason(cluster.device) is None
    others = [
        f
        for f in FORMATS.values()
        if f.name not in {fmt.name, "fp16", "fp32"} and (f.bits < fmt.bits or not runs)
    ]
    for f in sorted(others, key=lambda f: -f.bits):
        if f.unsupported_reason(cluster.device) is None and attempt(
            f"weights in {f.name} ({f.description})",
            cluster,
            replace(request, weight_format=f.name),
        ):
            break
    if kv_dtype_bytes(request.kv_dtype) > 1 and cluster.device.vendor == "nvidia":
        attempt("fp8 KV cache (--kv-cache-dtype fp8)", cluster, replace(request, kv_dtype="fp8"))
    for factor in range(2, MAX_NODE_FACTOR + 1):
        more = replace(cluster, nodes=cluster.nodes * factor)
        if attempt(
            f"{more.nodes} nodes of {cluster.devices_per_node} x {cluster.device.name}",
            more,
            request,
        ):
            break
    length = request.max_model_len
    if length is not None:
        while length > MIN_CONTEXT // 2:
            length //= 2
            if attempt(
                f"max_model_len {length:,}", cluster, replace(request, max_model_len=length)
            ):
                break
    if request.concurrency:
        attempt("as many concurrent sequences as fit", cluster, replace(request, concurrency=None))
    return found


def plan(
    model: ModelFacts,
    cluster: ClusterShape,
    request: PlanRequest | None = None,
    *,
    alternatives: bool = True,
) -> Plan:
    """Every layout of `model` on `cluster`, ranked, with a recommendation.

    When no layout fits, `Plan.recommended` is None and `Plan.alternatives` lists the
    nearest changes that would fit (each with the layout it would get); `alternatives=False`
    skips that search (it plans the model up to a few dozen more times).
    """
    request = request or PlanRequest()
    result = _plan_only(model, cluster, request)
    if result.recommended is not None or not alternatives:
        return result
    return replace(result, alternatives=tuple(_alternatives(model, cluster, request)))
