"""The engines a model may name (`models[].engine`): exactly those with an adapter in
deepfleet.engines, whose registry refuses to load when the two lists differ.

A leaf module, so that the schema can validate the name without importing the adapters (which
import the schema).
"""

from __future__ import annotations

from typing import Literal, get_args

EngineName = Literal["vllm", "vllm-cpu", "sglang", "vllm-ascend", "mindie"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
