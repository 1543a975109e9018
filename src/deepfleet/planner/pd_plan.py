"""plan_pd(): the best aggregated layout against the best prefill/decode split, and the pick.

P/D is recommended when its goodput (deepfleet.planner.disagg) beats the aggregated layout's by
PD_MARGIN; otherwise aggregated, whose single pool is simpler to run and moves no KV. The
reason names the numbers that decided it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

from deepfleet.catalog.models import ModelFacts
from deepfleet.planner.disagg import (
    Operating,
    Option,
    Pool,
    Workload,
    aggregated_at,
    goodput,
    pd_at,
    transfer_bytes,
)
from deepfleet.planner.formats import get_format
from deepfleet.planner.layout import ClusterShape, PlanRequest
from deepfleet.planner.plan import plan

PD_MARGIN = 1.1
"""P/D must beat aggregated goodput by this factor to be worth two pools and a KV link."""
TOP_LAYOUTS = 3
"""Feasible layouts per pool tried (the planner's fastest first)."""


class SplitError(ValueError):
    """A P/D split that cannot run, with the reason."""


@dataclass(frozen=True)
class PdPlan:
    model: str
    cluster: str
    workload: Workload
    link_bandwidth: float
    aggregated: Option | None
    pd: Option | None
    options: tuple[Option, ...]
    recommended: Option | None
    reason: str


def _pools(model: ModelFacts, cluster: ClusterShape, request: PlanRequest) -> list[Pool]:
    p = plan(model, cluster, request, alternatives=False)
    fmt = p.weight_format
    return [Pool(model, fmt, cluster, lay) for lay in p.layouts if lay.feasible][:TOP_LAYOUTS]


def _prefill_share(pool: Pool, work: Workload) -> float:
    context = int(work.mean_input + work.mean_output / 2)
    batch = max(1.0, pool.max_batch / 2)
    pre = sum(c.share * pool.prefill_s(c.input_tokens) for c in work.classes)
    dec = work.mean_output * pool.decode_step_s(batch, context) / batch
    return pre / (pre + dec)


def aggregated_options(
    model: ModelFacts, cluster: ClusterShape, work: Workload, request: PlanRequest
) -> list[Option]:
    out = []
    for pool in _pools(model, cluster, request):
        best = goodput(partial(aggregated_at, pool, work))
        out.append(
            Option(
                "aggregated",
                pool.layout.label,
                pool.layout,
                None,
                0,
                cluster.nodes,
                best,
                0,
                0.0,
                _prefill_share(pool, work),
            )
        )
    return out


def _pd_rate(pre: Pool, dec: Pool, work: Workload, link: float, rate: float) -> Operating:
    return pd_at(pre, dec, work, rate, link)


def split(
    model: ModelFacts,
    cluster: ClusterShape,
    prefill_nodes: int,
    work: Workload,
    request: PlanRequest | None = None,
    link_bandwidth: float | None = None,
) -> list[Option]:
    """Every (prefill layout, decode layout) of a split with `prefill_nodes` prefill nodes.

    Raises SplitError when the split cannot run: fewer than two nodes, a pool with no nodes,
    or a pool whose nodes cannot hold the model (the planner's reason is quoted).
    """
    request = request or PlanRequest()
    if cluster.nodes < 2:
        raise SplitError(
            f"P/D splits whole nodes: a {cluster.nodes}-node cluster has no second pool"
        )
    if not 1 <= prefill_nodes < cluster.nodes:
        raise SplitError(
            f"prefill nodes must be 1 to {cluster.nodes - 1} of the {cluster.nodes} nodes, "
            f"not {prefill_nodes}"
        )
    link = link_bandwidth or cluster.network_bandwidth
    pools = []
    for role, nodes in (("prefill", prefill_nodes), ("decode", cluster.nodes - prefill_nodes)):
        sub = replace(cluster, nodes=nodes)
        found = _pools(model, sub, request)
        if not found:
            why = plan(model, sub, request, alternatives=False).layouts[0].reason
            raise SplitError(
                f"the {role} pool ({nodes} x {cluster.devices_per_node} "
                f"{cluster.device.name}) cannot hold {model.name}: {why}"
            )
        pools.append((sub, found))
    (_, prefills), (_, decodes) = pools
    # Prefill wants the most replicas (least queueing) for the same FLOPs.
    pre = max(prefills, key=lambda p: (p.replicas, -p.layout.tp))
    moved = int(sum(c.share * transfer_bytes(model, c.input_tokens) for c in work.classes))
    out = []
    for dec in decodes:
        best = goodput(partial(_pd_rate, pre, dec, work, link))
        label = (
            f"P/D {prefill_nodes}:{cluster.nodes - prefill_nodes} "
            f"(prefill {pre.layout.label}; decode {dec.layout.label})"
        )
        out.append(
            Option(
                "pd",
                label,
                dec.layout,
                pre.layout,
                prefill_nodes,
                cluster.nodes - prefill_nodes,
                best,
                moved,
                moved / link,
                _prefill_share(dec, work),
            )
        )
    return out


def _describe(op: Operating) -> str:
    return (
        f"{op.rate:.2f} req/s (TTFT p90 {op.ttft_p90_s:.2f} s, ITL p90 {op.itl_p90_s * 1e3:.0f} ms)"
    )


def plan_pd(
    model: ModelFacts,
    cluster: ClusterShape,
    work: Workload,
    request: PlanRequest | None = None,
    link_bandwidth: float | None = None,
) -> PdPlan:
    """The best aggregated layout, the best P/D split, and which to run, with the reason."""
    request = request or PlanRequest()
    link = link_bandwidth or cluster.network_bandwidth
    aggs = aggregated_options(model, cluster, work, request)
    pds: list[Option] = []
    refused: list[str] = []
    for n in range(1, cluster.nodes):
        try:
            pds += split(model, cluster, n, work, request, link)
        except SplitError as e:
            refused.append(str(e))
    agg = max(aggs, key=lambda o: o.goodput, default=None)
    pd = max(pds, key=lambda o: o.goodput, default=None)
    fmt = get_format(request.weight_format, model.shipped_format).name
    where = f"{cluster.nodes} x {cluster.devices_per_node} {cluster.device.name} ({fmt})"
    pick, reason = _choose(agg, pd, work, refused, cluster.nodes)
    return PdPlan(model.name, where, work, link, agg, pd, tuple(aggs + pds), pick, reason)


def _choose(
    agg: Option | None, pd: Option | None, work: Workload, refused: list[str], nodes: int
) -> tuple[Option | None, str]:
    if agg is None and pd is None:
        return None, "nothing fits this cluster (see `deepfleet plan`)"
    if pd is None:
        why = refused[-1] if refused else f"a {nodes}-node cluster cannot be split"
        return agg, f"aggregated: no P/D split fits ({why})"
    if agg is None or agg.goodput == 0:
        return pd, f"P/D: aggregated meets no rate at these targets; P/D {_describe(pd.best)}"
    gain = pd.goodput / agg.goodput
    if pd.goodput <= agg.goodput * PD_MARGIN:
        return agg, (
            f"aggregated: prefill is {agg.prefill_share:.0%} of the work; aggregated "
            f"{_describe(agg.best)} vs P/D {_describe(pd.best)} ({gain:.2f}x), and P/D adds "
            f"{pd.transfer_s * 1e3:.1f} ms of KV transfer ({pd.transfer_bytes / 1e6:.0f} MB) "
            f"per request"
        )
    return pd, (
        f"P/D: {gain:.1f}x goodput; P/D {_describe(pd.best)} vs aggregated "
        f"{_describe(agg.best)}, limited by {_agg_limit(agg, work)}; KV transfer "
        f"{pd.transfer_bytes / 1e6:.0f} MB, {pd.transfer_s * 1e3:.1f} ms per request"
    )


def _agg_limit(agg: Option, work: Workload) -> str:
    """What stops the aggregated layout just above its goodput."""
    return (
        "prefill interrupting decode steps" if agg.best.itl_p90_s > 0.8 * work.itl_s else ("TTFT")
    )


def pd_plan_dict(p: PdPlan) -> dict[str, object]:
    """JSON-ready form of a PdPlan."""

    def option(o: Option | None) -> dict[str, object] | None:
        if o is None:
            return None
        return {
            "kind": o.kind,
            "label": o.label,
            "prefill_nodes": o.prefill_nodes,
            "decode_nodes": o.decode_nodes,
            "prefill_layout": o.prefill.engine_args() if o.prefill else None,
            "decode_layout": o.decode.engine_args(),
            "goodput_req_s": round(o.goodput, 3),
            "ttft_p90_s": round(o.best.ttft_p90_s, 4),
            "itl_p90_ms": round(o.best.itl_p90_s * 1e3, 2),
            "limit": o.best.why,
            "transfer_bytes_per_request": o.transfer_bytes,
            "transfer_ms_per_request": round(o.transfer_s * 1e3, 2),
            "prefill_share": round(o.prefill_share, 3),
        }

    return {
        "model": p.model,
        "cluster": p.cluster,
        "workload": {
            "name": p.workload.name,
            "classes": [c.__dict__ for c in p.workload.classes],
            "ttft_s": p.workload.ttft_s,
            "itl_s": p.workload.itl_s,
        },
        "link_bandwidth": p.link_bandwidth,
        "recommended": option(p.recommended),
        "reason": p.reason,
        "aggregated": option(p.aggregated),
        "pd": option(p.pd),
        "options": [option(o) for o in p.options],
    }
