"""Scorers by the name used in a kv_aware profile (fleet.yaml `kv_cache.routing.scorers`).
A new scorer is one file in this folder, one line here and its name in
deepfleet.config.routing (which the config validates against; they must agree)."""

from __future__ import annotations

from deepfleet.config.routing import SCORER_NAMES
from deepfleet.routing.scorers.base import Scorer
from deepfleet.routing.scorers.kv_free import KvFree
from deepfleet.routing.scorers.load import Load
from deepfleet.routing.scorers.prefill import Prefill
from deepfleet.routing.scorers.prefix import Prefix
from deepfleet.routing.scorers.spread import Spread

# The order is the order their weighted values are added in (float addition is not
# associative, so a profile's decisions depend on it; it does not depend on the YAML's order).
SCORERS: dict[str, Scorer] = {
    "prefix": Prefix(),
    "prefill": Prefill(),
    "load": Load(),
    "kv_free": KvFree(),
    "spread": Spread(),
}
if tuple(SCORERS) != SCORER_NAMES:
    raise ImportError(f"scorers {list(SCORERS)} differ from config.routing {list(SCORER_NAMES)}")


def known_scorers() -> list[str]:
    return list(SCORERS)


__all__ = ["SCORERS", "Scorer", "known_scorers"]
