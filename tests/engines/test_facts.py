"""What each adapter says about its engine: the facts the fleet, the planner's placement, the
deploy renderers and the load scrapers ask instead of comparing engine names."""

from __future__ import annotations

from typing import Any

import pytest

from deepfleet.engines import get_adapter, known_engines
from deepfleet.engines.load import VLLM_METRICS
from deepfleet.engines.sglang import SGLANG_METRICS

# engine: (vendor, visible-devices variable, python module, block size, multi-node)
FACTS: dict[str, tuple[str, str | None, str | None, int, str | None]] = {
    "vllm": ("nvidia", "CUDA_VISIBLE_DEVICES", "vllm", 16, "ray"),
    "vllm-cpu": ("cpu", None, "vllm", 128, None),
    "sglang": ("nvidia", "CUDA_VISIBLE_DEVICES", "sglang", 1, None),
    "vllm-ascend": ("ascend", "ASCEND_RT_VISIBLE_DEVICES", "vllm", 128, "ray"),
    "mindie": ("ascend", "ASCEND_RT_VISIBLE_DEVICES", None, 128, "rank-table"),
}


def test_every_registered_engine_has_its_facts_listed() -> None:
    assert sorted(FACTS) == known_engines()


@pytest.mark.parametrize(("engine", "facts"), FACTS.items())
def test_facts(engine: str, facts: tuple[str, str | None, str | None, int, str | None]) -> None:
    a = get_adapter(engine)
    assert a.name == engine
    assert (a.vendor, a.visible_devices_env, a.python_module, a.default_block_size,
            a.multi_node) == facts  # fmt: skip
    assert a.block_size({}) == a.default_block_size
    assert a.health_path == "/health"
    assert a.load_metrics == (SGLANG_METRICS if engine == "sglang" else VLLM_METRICS)


@pytest.mark.parametrize(
    ("engine", "args", "block"),
    [
        ("vllm", {"block_size": 32}, 32),
        ("vllm-cpu", {"block_size": 64}, 64),
        ("vllm-ascend", {"block_size": 64}, 64),
        ("sglang", {"page_size": 16}, 16),
        ("mindie", {"cacheBlockSize": 256}, 256),
        ("sglang", {"block_size": 16}, 1),  # vLLM's name means nothing to SGLang
    ],
)
def test_the_configured_block_size_wins(engine: str, args: dict[str, Any], block: int) -> None:
    assert get_adapter(engine).block_size(args) == block


def test_unknown_engine_lists_the_available_ones() -> None:
    with pytest.raises(KeyError, match="available: mindie, sglang, vllm"):
        get_adapter("tgi")
