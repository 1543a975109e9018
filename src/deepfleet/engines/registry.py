"""Engine adapters by name (the `engine` field of a model in fleet.yaml)."""

from __future__ import annotations

from deepfleet.engines.base import EngineAdapter
from deepfleet.engines.mindie import MindieAdapter
from deepfleet.engines.vllm import VllmAdapter
from deepfleet.engines.vllm_ascend import VllmAscendAdapter

_ADAPTERS: dict[str, EngineAdapter] = {
    "vllm": VllmAdapter(name="vllm"),
    "vllm-cpu": VllmAdapter(name="vllm-cpu", cpu=True),
    "vllm-ascend": VllmAscendAdapter(),
    "mindie": MindieAdapter(),
}


def known_engines() -> list[str]:
    return sorted(_ADAPTERS)


def get_adapter(name: str) -> EngineAdapter:
    try:
        return _ADAPTERS[name]
    except KeyError:
        raise KeyError(
            f"engine {name!r} has no adapter yet; available: {', '.join(known_engines())}"
        ) from None
