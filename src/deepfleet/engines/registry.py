"""Engine adapters by name (the `engine` field of a model in fleet.yaml)."""

from __future__ import annotations

from deepfleet.config.engines import ENGINE_NAMES
from deepfleet.engines.base import EngineAdapter
from deepfleet.engines.mindie import MindieAdapter
from deepfleet.engines.sglang import SglangAdapter
from deepfleet.engines.vllm import VllmAdapter
from deepfleet.engines.vllm_ascend import VllmAscendAdapter

_ADAPTERS: dict[str, EngineAdapter] = {
    a.name: a
    for a in (
        VllmAdapter(name="vllm"),
        VllmAdapter(name="vllm-cpu", cpu=True),
        SglangAdapter(),
        VllmAscendAdapter(),
        MindieAdapter(),
    )
}
if sorted(_ADAPTERS) != sorted(ENGINE_NAMES):
    raise ImportError(
        f"engine adapters {sorted(_ADAPTERS)} differ from config.engines {sorted(ENGINE_NAMES)}"
    )


def known_engines() -> list[str]:
    return sorted(_ADAPTERS)


def get_adapter(name: str) -> EngineAdapter:
    try:
        return _ADAPTERS[name]
    except KeyError:
        raise KeyError(
            f"engine {name!r} has no adapter yet; available: {', '.join(known_engines())}"
        ) from None
