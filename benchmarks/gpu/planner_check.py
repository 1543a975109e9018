"""The planner's prediction for one engine, next to what vLLM logged at its start.

The prediction is `deepfleet plan`'s: `plan()` for one node of H200s (each with the lent
one's measured total, 150,109,880,320 bytes), the engine's fixed layout (one GPU by default;
TP/PP/DP-attention + EP for issue 12) and its settings (gpu_memory_utilization, max_model_len,
KV dtype). Compared, per GPU: weights, KV bytes per token, the KV budget; per engine: the KV
tokens vLLM logs (with DP attention, the sum over the ranks' lines); the target is within 3%
(TARGET).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.gpu.vllm_log import StartupFacts, graph_estimate_bytes

from deepfleet.catalog.hardware import GiB, get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import ClusterShape, Parallelism, PlanRequest, plan
from deepfleet.planner.memory import reserve_bytes

TARGET = 0.03
H200 = "H200"


@dataclass(frozen=True)
class Prediction:
    model: str
    utilization: float
    max_model_len: int
    total_bytes: int
    weights_bytes: int
    activation_bytes: int
    reserve_bytes: int
    graph_bytes: int
    """The CUDA graph part of the reserve."""
    kv_budget_bytes: int
    kv_bytes_per_token: int
    kv_tokens: int
    max_num_batched_tokens: int
    max_num_seqs: int
    parallel: Parallelism = field(default_factory=Parallelism)
    """The layout: one GPU unless given (tp x pp x attn_dp GPUs)."""
    feasible: bool = True
    reason: str = "fits"


def predict(
    model_dir: str,
    utilization: float,
    max_model_len: int,
    kv_dtype: str = "auto",
    parallel: Parallelism | None = None,
    max_num_seqs: int | None = None,
) -> Prediction:
    """The plan of one engine laid out as `parallel` (default: one GPU) on one node with
    exactly the GPUs it uses."""
    par = parallel or Parallelism()
    facts = load_model_facts(model_dir)
    device = get_device(H200)
    request = PlanRequest(
        kv_dtype=kv_dtype, max_model_len=max_model_len, gpu_memory_utilization=utilization,
        parallel=par, max_num_seqs=max_num_seqs,
    )  # fmt: skip
    gpus = par.tp * par.pp * par.attn_dp
    result = plan(facts, ClusterShape(device, 1, gpus), request)
    layout = result.recommended or result.layouts[0]
    mem = layout.memory
    graphs = reserve_bytes(facts, par, device, False) - reserve_bytes(facts, par, device, True)
    return Prediction(
        model=facts.name, utilization=utilization, max_model_len=max_model_len,
        total_bytes=device.memory_bytes, weights_bytes=mem.weights,
        activation_bytes=mem.activation, reserve_bytes=mem.reserve, graph_bytes=graphs,
        kv_budget_bytes=mem.kv,
        kv_bytes_per_token=mem.kv_bytes_per_token, kv_tokens=layout.kv_tokens,
        max_num_batched_tokens=layout.max_num_batched_tokens, max_num_seqs=layout.max_num_seqs,
        parallel=par, feasible=layout.feasible, reason=layout.reason,
    )  # fmt: skip


def _row(
    name: str, measured: float | None, predicted: float, unit: str, target: bool
) -> dict[str, Any]:
    row: dict[str, Any] = {"quantity": name, "unit": unit, "predicted": round(predicted, 4)}
    if measured is None:
        return row | {"measured": None, "error": None, "within_target": None}
    error = (predicted - measured) / measured if measured else None
    return row | {
        "measured": round(measured, 4),
        "error": None if error is None else round(error, 4),
        "within_target": None if not target or error is None else abs(error) <= TARGET,
    }


def compare(pred: Prediction, facts: StartupFacts) -> dict[str, Any]:
    """Rows of measured vs predicted; `error` is (predicted - measured) / measured."""
    kv_bytes = None if facts.available_kv_gib is None else facts.available_kv_gib * GiB
    per_token = None
    if kv_bytes is not None and facts.kv_tokens:
        per_token = kv_bytes / facts.kv_tokens  # one GPU's budget over its rank's tokens
    dp = pred.parallel.attn_dp
    ranks = facts.kv_tokens_by_rank
    tokens: float | None = facts.kv_tokens
    if dp > 1 and len(ranks) == dp:
        tokens = sum(ranks.values())
    elif dp > 1 and facts.kv_tokens is not None:
        tokens = facts.kv_tokens * dp  # not every rank's line was seen: the first, dp times
    budget = pred.utilization * pred.total_bytes
    rest = None
    if kv_bytes is not None and facts.weights_gib is not None:
        rest = (budget - facts.weights_gib * GiB - kv_bytes) / GiB
    graphs = graph_estimate_bytes(facts, pred.utilization, pred.total_bytes)
    rows = [
        _row("weights", facts.weights_gib, pred.weights_bytes / GiB, "GiB", True),
        _row("kv_bytes_per_token", per_token, pred.kv_bytes_per_token, "bytes", True),
        _row("kv_budget", facts.available_kv_gib, pred.kv_budget_bytes / GiB, "GiB", True),
        _row("kv_tokens", tokens, pred.kv_tokens, "tokens", True),
        _row(
            "activation_and_reserve",
            rest,
            (pred.activation_bytes + pred.reserve_bytes) / GiB,
            "GiB",
            False,
        ),
        _row("peak_activation", facts.activation_gib, pred.activation_bytes / GiB, "GiB", False),
        _row(
            "cuda_graph_estimate",
            None if graphs is None else graphs / GiB,
            pred.graph_bytes / GiB,
            "GiB",
            False,
        ),
    ]
    judged = [r["within_target"] for r in rows if r["within_target"] is not None]
    return {
        "model": pred.model,
        "settings": {
            "gpu_memory_utilization": pred.utilization,
            "max_model_len": pred.max_model_len,
            "total_bytes": pred.total_bytes,
            "max_num_batched_tokens": pred.max_num_batched_tokens,
            "max_num_seqs": pred.max_num_seqs,
            "parallel": asdict(pred.parallel),
            "planner_feasible": pred.feasible,
            "planner_reason": pred.reason,
        },
        "kv_token_ranks": len(ranks),
        "rows": rows,
        "all_within_target": all(judged) if judged else None,
        "graph_capture_gib": facts.graph_capture_gib,
    }


def table(check: dict[str, Any]) -> str:
    lines = [f"planner vs vLLM: {check['model']} {check['settings']}"]
    for r in check["rows"]:
        err = "" if r["error"] is None else f"{100 * r['error']:+.2f}%"
        flag = {True: "ok", False: "OFF", None: ""}[r["within_target"]]
        lines.append(
            f"  {r['quantity']:<24} measured {r['measured']!s:>14}  predicted "
            f"{r['predicted']!s:>14} {r['unit']:<8} {err:>8} {flag}"
        )
    return "\n".join(lines)
