"""From `deepfleet plan-pd`'s pick to a fleet.yaml that `config check`, `up` and `render` take.

The planner's answer is only useful if it can be run as is: `plan-pd --write-config FILE`
writes the recommended layout as a whole fleet.yaml (cluster, the model, the gateway), so the
path from the recommendation to a bundle is `plan-pd --write-config`, `config check`,
`render k8s|compose|ascend` (docs/planner.md's worked examples).

- aggregated: the model's `replicas` and `parallel` (tp, pp, dp attention, ep), as the planner
  laid out one replica.
- P/D: `models[].disaggregation`: each pool's replicas and layout (TP, DP attention, EP) as the
  planner laid it out on its own nodes, and the KV connector resolved for the engine
  (`auto` -> nixl on NVIDIA, mooncake on Ascend), written out so the file says what runs.

Both keep the planner's `max_model_len` (the context the pools were sized for) and a weight
format other than the checkpoint's own (`dtype`). The per-engine knobs the planner derives
from the layout (max_num_seqs, gpu_memory_utilization) are left out: `up` and the renderers
plan each pool again from the same layout and get the same values.

What is written passes `config check` (the same validation) or is not written at all. A pool
layout with pipeline parallelism cannot be written: `disaggregation.prefill/decode`
carry TP, DP attention and EP only (the launchers start one engine per pool replica).
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

from deepfleet.config.disagg import CONNECTORS
from deepfleet.config.load import ConfigError as InvalidConfig
from deepfleet.config.load import validate
from deepfleet.planner.disagg import Option
from deepfleet.planner.layout import ClusterShape, Layout
from deepfleet.planner.pd_plan import PdPlan


class ConfigError(ValueError):
    """The recommendation cannot be written as a fleet.yaml, with the reason."""


def model_name(catalog_name: str) -> str:
    """`deepseek-ai/DeepSeek-R1` -> `deepseek-r1`: the name clients send."""
    return catalog_name.rsplit("/", 1)[-1].lower()


def _pool(role: str, layout: Layout) -> dict[str, Any]:
    if layout.pp > 1:
        raise ConfigError(
            f"the {role} pool's layout ({layout.label}) uses pipeline parallelism, which "
            f"models[].disaggregation.{role} cannot express (tensor_parallel_size, "
            "data_parallel_size, expert_parallel); serve it aggregated or plan other nodes"
        )
    return {
        "replicas": layout.dp,
        "tensor_parallel_size": layout.tp,
        "data_parallel_size": layout.attn_dp,
        "expert_parallel": layout.ep,
    }


def _layout(option: Option, engine: str) -> dict[str, Any]:
    """The model entry's layout keys for `option`."""
    if option.prefill is None:
        lay = option.decode
        return {
            "replicas": lay.dp,
            "parallel": {"tp": lay.tp, "pp": lay.pp, "dp": lay.attn_dp, "ep": lay.ep},
        }
    return {
        "disaggregation": {
            "connector": CONNECTORS[engine][0],
            "prefill": _pool("prefill", option.prefill),
            "decode": _pool("decode", option.decode),
        }
    }


def fleet_config(
    p: PdPlan,
    cluster: ClusterShape,
    *,
    source: str,
    name: str | None = None,
    mode: str | None = None,
    weight_format: str | None = None,
) -> dict[str, Any]:
    """The fleet.yaml (as data) that runs `p.recommended` on `cluster`.

    `weight_format`: the format planned when it is not the checkpoint's own (written as the
    model's `dtype`). Raises ConfigError when nothing is recommended, the pick cannot be
    written, or the config would not pass `config check` (its problems, naming the fields).
    """
    pick = p.recommended
    if pick is None:
        raise ConfigError(f"nothing to write: {p.reason}")
    engine = cluster.device.engine
    model: dict[str, Any] = {
        "name": name or model_name(p.model),
        "source": source,
        "engine": engine,
        **_layout(pick, engine),
    }
    if weight_format is not None:
        model["dtype"] = weight_format
    model["max_model_len"] = pick.decode.max_model_len
    data = {
        "cluster": {
            "mode": mode or ("ray" if cluster.nodes > 1 else "local"),
            "nodes": cluster.nodes,
            "devices_per_node": cluster.devices_per_node,
            "device": cluster.device.name,
        },
        "models": [model],
        "gateway": {"host": "0.0.0.0", "port": 8000},
    }
    try:
        validate(data, "the written config")
    except InvalidConfig as e:
        raise ConfigError("; ".join(e.problems)) from None
    return data


def _next(data: dict[str, Any]) -> str:
    if data["models"][0]["engine"] == "vllm-ascend":
        return (
            "Next: add deploy.nodes (each node's address and NPU plan), then deepfleet config "
            "check -f FILE; deepfleet render ascend -f FILE -o DIR (docs/planner.md)."
        )
    return (
        "Next: deepfleet config check -f FILE; deepfleet render k8s -f FILE -o DIR "
        "(docs/planner.md)."
    )


def _header(p: PdPlan, data: dict[str, Any], command: str) -> str:
    pick = p.recommended
    assert pick is not None
    mix = ", ".join(
        f"{c.share:.0%} {c.input_tokens} in / {c.output_tokens} out" for c in p.workload.classes
    )
    lines = [
        f"Written by: {command}",
        f"{p.model} on {p.cluster}; workload {mix}; targets TTFT p90 <= "
        f"{p.workload.ttft_s:g} s, ITL p90 <= {p.workload.itl_s * 1e3:g} ms.",
        f"Recommended: {pick.label}, {pick.goodput:.1f} req/s of goodput (planner estimate).",
        f"Why: {p.reason}",
        _next(data),
    ]
    wrapped = [
        w
        for line in lines
        for w in textwrap.wrap(
            line, 96, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False
        )
    ]
    return "".join(f"# {line}\n" for line in wrapped)


def config_yaml(p: PdPlan, data: dict[str, Any], command: str) -> str:
    """`data` as fleet.yaml text, headed by comments saying where it came from and why."""
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    return _header(p, data, command) + body
