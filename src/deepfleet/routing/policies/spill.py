"""The spill picker: take the best-scored endpoint unless it is overloaded, else the least
loaded one, so a hot prefix gets copied to an idle replica instead of melting the one that
has it.

Overloaded: its load is at least `spill_rel` times the least loaded one's and exceeds it by
`spill_queued` requests while its engine queues requests (`waiting` > 0), or by `spill_abs`
requests regardless. Reasons: `spill`, else `prefix` (the first choice holds part of the
prompt) or `load` (it holds none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deepfleet.routing.base import Decision, Endpoint
from deepfleet.routing.load_order import by_load

SETTINGS = ("spill_queued", "spill_abs", "spill_rel")


@dataclass(frozen=True)
class Spill:
    spill_queued: int = 4
    spill_abs: int = 32
    spill_rel: float = 1.5

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Spill:
        out = cls(
            int(params.get("spill_queued", cls.spill_queued)),
            int(params.get("spill_abs", cls.spill_abs)),
            float(params.get("spill_rel", cls.spill_rel)),
        )
        if out.spill_rel < 1 or out.spill_queued < 0 or out.spill_abs < 0:
            raise ValueError("spill_rel must be >= 1, spill_queued and spill_abs >= 0")
        return out

    def pick(self, ranked: list[Endpoint], ring: Sequence[Endpoint]) -> Decision:
        """`ranked`: best score first; `ring`: the same endpoints in the policy's rotation,
        whose order breaks load ties when spilling."""
        best = ranked[0]
        least = min(e.load for e in ring)
        excess = best.load - least
        if best.load >= self.spill_rel * least and (
            excess >= self.spill_abs or (best.waiting > 0 and excess >= self.spill_queued)
        ):
            return Decision(by_load(ring), "spill")
        return Decision(ranked, "prefix" if best.matched_blocks > 0 else "load")
