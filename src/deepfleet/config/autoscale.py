"""fleet.yaml's autoscaling knobs for one model: `replicas: {min, max}` and `autoscale:`.

The autoscaler (deepfleet.autoscale) keeps a model's replicas between `min` and `max` from
its latency targets; the numbers here become its `Targets`.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, ValidationError, model_validator

from deepfleet.config.base import Strict


class ReplicaRange(Strict):
    min: int = Field(
        1,
        ge=0,
        description="Fewest replicas. 0: scale to zero after `autoscale.idle_timeout_s`; the "
        "model stays listed (cold) and a request for it starts a replica and waits for it. "
        "The fleet starts with at least one.",
    )
    max: int = Field(ge=1, description="Most replicas the autoscaler may run.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def __str__(self) -> str:
        return f"{self.min}..{self.max}"

    @classmethod
    def parse(cls, value: dict[str, object]) -> ReplicaRange:
        """Validate a mapping, with errors as one line naming the key (`max: ...`)."""
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            lines = []
            for e in exc.errors():
                where = ".".join(str(p) for p in e["loc"])
                msg = e["msg"].removeprefix("Value error, ")
                lines.append(f"{where}: {msg}" if where else msg)
            raise ValueError("{min, max}: " + "; ".join(lines)) from None


class AutoscaleSpec(Strict):
    ttft_p90_ms: float = Field(
        2000.0, gt=0, description="Target p90 time to first token, measured at the gateway."
    )
    itl_p90_ms: float = Field(
        50.0, gt=0, description="Target p90 inter-token latency, measured at the gateway."
    )
    queue_per_replica: float = Field(
        4.0, ge=0, description="Requests waiting per ready replica above which it scales up."
    )
    utilization: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Share of a replica's modelled capacity predictive sizing plans for.",
    )
    up_cooldown_s: float = Field(30.0, ge=0, description="Least time between two scale-ups.")
    down_cooldown_s: float = Field(
        300.0, ge=0, description="Least time after any scaling before a scale-down."
    )
    idle_timeout_s: float = Field(
        600.0, gt=0, description="With `replicas.min: 0`: idle time before scaling to zero."
    )
