"""The live controller's capacity of one replica: requests/s it serves within the model's ITL
target, for the request mix the gateway measures, from the planner's step-time model.

The model of a replica is the simulator's (sim.build: the planner's roofline of the model on
`cluster.device` at the replica's tp x pp, with the efficiency, per-sequence and host terms
fitted on vLLM on an H200; docs/simulator.md), with the replica's max_num_seqs and the KV
tokens its layout leaves. `replica_capacity` (autoscale/capacity.py) turns it into a rate
for the mix: mean prompt and output tokens per request over the window (the gateway's token
counters divided by its requests).

Accelerator replicas only: vLLM's CPU build has no calibrated step model (its step time
depends on the host's cores and on what else runs there), so a CPU model gets None and is
scaled reactively, from its measured latencies and queue.
"""

from __future__ import annotations

import logging

from deepfleet.autoscale.capacity import replica_capacity
from deepfleet.catalog.hardware import get_device
from deepfleet.config.autoscale import AutoscaleSpec
from deepfleet.config.schema import FleetConfig, ModelSpec
from deepfleet.engines.base import ReplicaPlan
from deepfleet.planner.fleet import model_facts_for, request_for
from deepfleet.sim.build import SimSpec, build
from deepfleet.sim.engine import EngineConfig
from deepfleet.sim.profile import LatencyProfile

log = logging.getLogger(__name__)
Model = tuple[EngineConfig, LatencyProfile]


class PlannerCapacity:
    """`capacity(spec, plan, mean_input, mean_output)`: requests/s, or None (no model)."""

    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg
        self._models: dict[str, Model | None] = {}

    def model(self, spec: ModelSpec, plan: ReplicaPlan) -> Model | None:
        """The replica's engine limits and step-time profile; built once per model."""
        if spec.name not in self._models:
            self._models[spec.name] = self._build(spec, plan)
        return self._models[spec.name]

    def _build(self, spec: ModelSpec, plan: ReplicaPlan) -> Model | None:
        device = self.cfg.cluster.device
        try:
            if get_device(device).vendor == "cpu":
                return None
            facts = model_facts_for(spec)
            sim = SimSpec(
                model=facts.name, gpu=device, tp=plan.tp, pp=plan.pp,
                max_model_len=plan.max_model_len, max_num_seqs=plan.max_num_seqs,
                weight_format=request_for(spec).weight_format,
            )  # fmt: skip
            config, profile, _ = build(sim, facts)
        except Exception as exc:  # an unknown device or model: scale reactively
            log.warning("autoscale %s: no capacity model (%s); reactive only", spec.name, exc)
            return None
        return config, profile

    def __call__(
        self, spec: ModelSpec, plan: ReplicaPlan | None, mean_input: float, mean_output: float
    ) -> float | None:
        if plan is None or mean_output <= 0:
            return None
        model = self.model(spec, plan)
        if model is None:
            return None
        config, profile = model
        itl_s = (spec.autoscale or AutoscaleSpec()).itl_p90_ms / 1e3
        return replica_capacity(
            lambda b, ctx: profile.step_s(b, ctx, 0),
            profile.prefill_s,
            input_tokens=mean_input,
            output_tokens=mean_output,
            itl_s=itl_s,
            max_seqs=config.max_num_seqs,
            kv_tokens=config.kv_tokens,
        )
