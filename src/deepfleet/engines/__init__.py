"""Engine adapters: how to start each engine from a replica plan, and how it reports ready."""

from deepfleet.engines.base import EngineAdapter, LaunchSpec, ReplicaPlan, engine_flags
from deepfleet.engines.registry import get_adapter, known_engines

__all__ = [
    "EngineAdapter",
    "LaunchSpec",
    "ReplicaPlan",
    "engine_flags",
    "get_adapter",
    "known_engines",
]
